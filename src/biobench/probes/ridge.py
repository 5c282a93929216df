"""One-vs-rest ridge classifier with cross-validated alpha, the whole alpha grid from one decomposition per fold.

The protocol of biobench's ImageNet, iNat21, iWildCam, Pl@ntNet and plankton tasks:
scikit-learn's `GridSearchCV(make_pipeline(StandardScaler(), RidgeClassifier(alpha)),
{"alpha": 2 ** arange(-15, 5)}, cv=5)`, optionally with `class_weight="balanced"` and CV
scored by macro-F1. The estimator is the same (targets +1/-1 per class, intercept by
weighted centring, `(X'WX + alpha I) w = X'W y`, predict the arg-max); what changes is how
it is computed:

- Per fold we accumulate, in float64 and in row chunks, the weighted centred Gram matrix
  X'WX (d x d) and X'WY (d x C). Y is never materialised: X'WY for +1/-1 targets is twice the
  per-class sum of weighted centred rows, built by scatter-adding rows into their class
  (`index_add_`). Memory is O(d^2 + d C) beyond the features, never O(N C) (scikit-learn
  builds a dense N x C target: 40 GB at iNat21 scale).
- One eigendecomposition G = V diag(s) V' per fold gives the solution for every alpha:
  W(alpha) = V diag(1 / (s + alpha)) V' X'WY, so validation scores for the whole grid cost
  one (n_val x d) projection plus, per alpha, one (n_val x d) @ (d x C) product.
- Standardisation (the pipeline's StandardScaler, fit on the training fold without
  weights) is folded into the Gram matrix as a diagonal rescaling.

Folds are scikit-learn's `StratifiedKFold(5)` (what `GridSearchCV` uses for a classifier),
and ties in CV score go to the first alpha in the grid, as in `GridSearchCV`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int

from biobench.probes import labels

_ROW_CHUNK = 16_384
"""Rows of features converted to float64 at once (accumulating moments, projecting)."""
_SCORE_ELEMENTS = 1 << 22
"""Largest (rows x classes) block of decision values scored at once: 4M values, 32 MB in float64."""


def default_alphas(lo: int = -15, hi: int = 5) -> Float[np.ndarray, " k"]:
    """The seed's grid: 2 ** arange(lo, hi) (ImageNet, iNat21, iWildCam; plankton used hi = 11)."""
    return np.power(2.0, np.arange(lo, hi))


@dataclasses.dataclass(frozen=True)
class _Solved:
    """A fold's decomposition: everything needed to score any alpha on new rows."""

    shift: torch.Tensor  # (d,) subtracted from raw features before scaling (the weighted mean)
    scale: torch.Tensor  # (d,) standard deviations (ones without standardisation)
    evals: torch.Tensor  # (d,) eigenvalues of the scaled centred Gram matrix
    evecs: torch.Tensor  # (d, d)
    q: torch.Tensor  # (d, C) = V' X'WY
    y_mean: torch.Tensor  # (C,) weighted mean of the +1/-1 targets (the intercept's share)
    present: torch.Tensor  # (C,) bool, classes with a training example in this fold


@dataclasses.dataclass
class _Moments:
    """Sums over a set of rows (features shifted by `origin`), weighted by per-class weights."""

    counts: torch.Tensor  # (C,) rows per class
    usum: torch.Tensor  # (d,) unweighted sum
    usq: torch.Tensor  # (d,) unweighted sum of squares
    wsum_x: torch.Tensor  # (d,) weighted sum
    gram: torch.Tensor  # (d, d) weighted uncentred Gram
    per_class: torch.Tensor  # (C, d) weighted per-class sums
    class_w: torch.Tensor  # (C,) the weights used

    def __sub__(self, other: _Moments) -> _Moments:
        return _Moments(*(getattr(self, f.name) - getattr(other, f.name) for f in dataclasses.fields(self)[:-1]), self.class_w)


def _moments(x: torch.Tensor, rows: torch.Tensor, codes: torch.Tensor, class_w: torch.Tensor, origin: torch.Tensor) -> _Moments:
    """Accumulate the moments of x[rows] in float64 row chunks (memory O(chunk x d + d^2 + C d))."""
    dev, d, f64 = x.device, x.shape[1], torch.float64
    n_classes = len(class_w)
    m = _Moments(
        torch.bincount(codes[rows], minlength=n_classes).to(f64),
        torch.zeros(d, dtype=f64, device=dev),
        torch.zeros(d, dtype=f64, device=dev),
        torch.zeros(d, dtype=f64, device=dev),
        torch.zeros(d, d, dtype=f64, device=dev),
        torch.zeros(n_classes, d, dtype=f64, device=dev),
        class_w,
    )
    for lo in range(0, len(rows), _ROW_CHUNK):
        r = rows[lo : lo + _ROW_CHUNK]
        xc = x[r].to(f64) - origin
        c = codes[r]
        wx = xc * class_w[c][:, None]
        m.usum += xc.sum(0)
        m.usq += (xc * xc).sum(0)
        m.wsum_x += wx.sum(0)
        m.gram += xc.T @ wx
        m.per_class.index_add_(0, c, wx)
    return m


def _balanced_weights(counts: torch.Tensor) -> torch.Tensor:
    """scikit-learn's compute_class_weight("balanced") over the classes seen in training (0 for the others)."""
    present = counts > 0
    return torch.where(present, counts.sum() / (present.sum() * counts.clamp(min=1)), torch.zeros_like(counts))


def _decompose(m: _Moments, origin: torch.Tensor, *, standardize: bool) -> _Solved:
    """Centre (weighted), scale (unweighted, as StandardScaler), eigendecompose."""
    f64 = torch.float64
    n = float(m.counts.sum())
    w_class_total = m.class_w * m.counts  # total weight per class
    w_total = w_class_total.sum()
    w_mean = m.wsum_x / w_total
    gram = m.gram - w_total * torch.outer(w_mean, w_mean)
    per_class = m.per_class - w_class_total[:, None] * w_mean[None, :]
    if standardize:
        u_mean = m.usum / n
        var = (m.usq / n - u_mean * u_mean).clamp(min=0)
        scale = var.sqrt()
        # scikit-learn's _handle_zeros_in_scale: a constant feature keeps scale 1.
        scale = torch.where(scale < 10 * torch.finfo(f64).eps, torch.ones_like(scale), scale)
    else:
        scale = torch.ones_like(w_mean)
    gram = gram / torch.outer(scale, scale)
    xty = 2.0 * (per_class / scale[None, :]).T  # (d, C): X'W(+1/-1 targets), the -1 part vanishes after centring
    evals, evecs = torch.linalg.eigh(gram)
    evals = evals.clamp(min=0)  # G is PSD; tiny negative values are rounding
    y_mean = 2.0 * w_class_total / w_total - 1.0
    return _Solved(origin + w_mean, scale, evals, evecs, evecs.T @ xty, y_mean, m.counts > 0)


def _origin(x: torch.Tensor) -> torch.Tensor:
    """A shift near the mean keeps the float64 uncentred sums free of cancellation."""
    return x[: min(len(x), 4096)].to(torch.float64).mean(0)


def _solve(
    x: torch.Tensor,
    rows: torch.Tensor,
    codes: torch.Tensor,
    n_classes: int,
    *,
    standardize: bool,
    balanced: bool,
) -> _Solved:
    """The decomposition for training rows `rows`."""
    origin = _origin(x)
    counts = torch.bincount(codes[rows], minlength=n_classes).to(torch.float64)
    class_w = _balanced_weights(counts) if balanced else torch.ones_like(counts)
    return _decompose(_moments(x, rows, codes, class_w, origin), origin, standardize=standardize)


def _project(x: torch.Tensor, rows: torch.Tensor, s: _Solved, dtype: torch.dtype) -> torch.Tensor:
    """Rows of x, centred and scaled as in training, in the eigenbasis: (n, d) in `dtype`."""
    out = torch.empty(len(rows), x.shape[1], dtype=dtype, device=x.device)
    for lo in range(0, len(rows), _ROW_CHUNK):
        xc = (x[rows[lo : lo + _ROW_CHUNK]].to(torch.float64) - s.shift) / s.scale
        out[lo : lo + len(xc)] = xc @ s.evecs
    return out


def _scores(z: torch.Tensor, s: _Solved, alpha: float) -> torch.Tensor:
    """Decision values (n, C) of the ridge with `alpha` for projected rows `z`."""
    inv = (1.0 / (s.evals + alpha)).to(z.dtype)
    scores = (z * inv) @ s.q.to(z.dtype)
    scores += s.y_mean.to(z.dtype)
    # A class absent from this training fold cannot be predicted (scikit-learn never saw it).
    return scores.masked_fill_(~s.present, -torch.inf) if not bool(s.present.all()) else scores


def _top2(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Arg-max per row and the gap between the best and second-best score."""
    if scores.shape[1] == 1:
        return torch.zeros(len(scores), dtype=torch.long, device=scores.device), torch.full((len(scores),), torch.inf, device=scores.device)
    top = torch.topk(scores, 2, dim=1)
    return top.indices[:, 0], top.values[:, 0] - top.values[:, 1]


def _predict_chunk(z: torch.Tensor, s: _Solved, alphas: np.ndarray, q_max: torch.Tensor) -> torch.Tensor:
    """Arg-max class code for every alpha for the rows z: (k, n).

    Exact, with a certificate that skips most per-alpha products: going from alpha_r to
    alpha moves every class score by at most b = sum_k |z_k| |1/(s_k+alpha) - 1/(s_k+alpha_r)|
    max_c |q_kc|, so a row whose best score leads the runner-up by more than 2b keeps its
    arg-max. Only the other rows are rescored (and if many are, all rows are rescored and
    alpha becomes the new reference). On large grids most alphas differ only in rows near
    a tie, so most of the (n x d) @ (d x C) products are never computed.
    """
    out = torch.empty(len(alphas), len(z), dtype=torch.long, device=z.device)
    abs_z = z.abs()
    ref_alpha = float(alphas[0])
    pred, gap = _top2(_scores(z, s, ref_alpha))
    out[0] = pred
    ref_inv = 1.0 / (s.evals + ref_alpha)
    for a_i in range(1, len(alphas)):
        alpha = float(alphas[a_i])
        delta = (1.0 / (s.evals + alpha) - ref_inv).abs()
        bound = abs_z @ (delta * q_max).to(z.dtype)
        # Rounding in float32 scores: keep a relative safety margin.
        unsure = gap <= 2 * bound * 1.001 + 1e-5 * (1 + gap.abs())
        n_unsure = int(unsure.sum())
        if n_unsure > 0.3 * len(z):
            pred, gap = _top2(_scores(z, s, alpha))
            ref_alpha, ref_inv = alpha, 1.0 / (s.evals + alpha)
            out[a_i] = pred
            continue
        row_pred = pred.clone()
        if n_unsure:
            rows = unsure.nonzero().squeeze(1)
            row_pred[rows] = _scores(z[rows], s, alpha).argmax(1)
        out[a_i] = row_pred
    return out


def _score_rows(n_classes: int) -> int:
    """Rows scored at once: at most `_ROW_CHUNK`, and few enough that a (rows x C) block stays under `_SCORE_ELEMENTS`."""
    return max(1, min(_ROW_CHUNK, _SCORE_ELEMENTS // max(n_classes, 1)))


def _predict_all_alphas(z: torch.Tensor, s: _Solved, alphas: np.ndarray) -> torch.Tensor:
    """Arg-max class code for every alpha: (k, n). Rows go in chunks so no (n x C) block exists."""
    q_max = s.q.abs().amax(1)  # (d,) largest |q_kc| over classes
    step = _score_rows(s.q.shape[1])
    out = torch.empty(len(alphas), len(z), dtype=torch.long, device=z.device)
    for lo in range(0, len(z), step):
        out[:, lo : lo + step] = _predict_chunk(z[lo : lo + step], s, alphas, q_max)
    return out


def _predict_rows(x: torch.Tensor, rows: torch.Tensor, s: _Solved, alphas: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """`_predict_all_alphas` of x[rows], projected a chunk at a time (no (n x d) projection of all rows is kept)."""
    out = torch.empty(len(alphas), len(rows), dtype=torch.long, device=x.device)
    for lo in range(0, len(rows), _ROW_CHUNK):
        r = rows[lo : lo + _ROW_CHUNK]
        out[:, lo : lo + len(r)] = _predict_all_alphas(_project(x, r, s, dtype), s, alphas)
    return out


def _cv_score(y_true: np.ndarray, y_pred: np.ndarray, scoring: str) -> float:
    if scoring == "accuracy":
        return float(np.mean(y_true == y_pred))
    from biobench import stats

    # scikit-learn's "f1_macro" scorer: the labels present in this fold's truth or predictions.
    return float(stats.macro_f1(y_true, y_pred, labels=np.union1d(y_true, y_pred)))


@dataclasses.dataclass(frozen=True)
class RidgeClassifier:
    """A fitted ridge classifier (the refit on all training data with the chosen alpha)."""

    classes: np.ndarray
    """Class labels, in the order of the decision columns."""
    alpha: float
    """The chosen regularisation strength."""
    alphas: Float[np.ndarray, " k"]
    """The grid searched."""
    cv_scores: Float[np.ndarray, " k"]
    """Mean CV score per alpha (accuracy or macro-F1), as GridSearchCV's mean_test_score."""
    solved: _Solved
    """The refit's decomposition."""

    def decision_function(self, x: Float[np.ndarray, "m d"] | torch.Tensor) -> torch.Tensor:
        """Decision values (m, C) in float64 (this one IS dense: use `predict` for many rows)."""
        xt = _as_tensor(x, self.solved.evecs.device)
        z = _project(xt, torch.arange(len(xt), device=xt.device), self.solved, torch.float64)
        return _scores(z, self.solved, self.alpha)

    def predict(self, x: Float[np.ndarray, "m d"] | torch.Tensor, *, dtype: torch.dtype = torch.float64) -> np.ndarray:
        """Predicted labels, scored in row chunks (memory O(chunk x C))."""
        xt = _as_tensor(x, self.solved.evecs.device)
        rows = torch.arange(len(xt), device=xt.device)
        return self.classes[_predict_rows(xt, rows, self.solved, np.array([self.alpha]), dtype)[0].cpu().numpy()]


def _as_tensor(x, device) -> torch.Tensor:
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    return t.to(device)


def fit(
    x: Float[np.ndarray, "n d"] | torch.Tensor,
    y: Int[np.ndarray, " n"],
    *,
    alphas: Float[np.ndarray, " k"] | None = None,
    standardize: bool = True,
    class_weight: Literal["balanced"] | None = None,
    scoring: Literal["accuracy", "macro_f1"] = "accuracy",
    n_folds: int = 5,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> RidgeClassifier:
    """Choose alpha by stratified k-fold CV over the whole grid, refit on all of (x, y).

    `dtype` is the precision of the per-alpha scoring products (the decompositions are
    always float64); use torch.float64 to reproduce scikit-learn to rounding error.
    `n_folds=1` (or a grid of one alpha) skips the search.
    """
    import sklearn.model_selection

    if scoring not in ("accuracy", "macro_f1"):
        raise ValueError(f"scoring must be 'accuracy' or 'macro_f1', got {scoring!r}.")
    if class_weight not in (None, "balanced"):
        raise ValueError(f"class_weight must be None or 'balanced', got {class_weight!r}.")
    alphas = default_alphas() if alphas is None else np.asarray(alphas, dtype=np.float64)
    y = np.asarray(y)
    classes, codes_np = labels.encode(x, y, "A ridge classifier")
    xt = _as_tensor(x, device)
    codes = torch.as_tensor(codes_np, device=xt.device)
    n_classes = len(classes)
    opts = dict(standardize=standardize, balanced=class_weight == "balanced")

    cv_scores = np.zeros(len(alphas))
    if len(alphas) > 1 and n_folds > 1:
        folds = list(sklearn.model_selection.StratifiedKFold(n_splits=n_folds).split(np.zeros(len(y)), y))
        per_fold = []
        origin = _origin(xt)
        if not opts["balanced"]:
            # Unweighted sums are additive: one pass over the data gives every fold's training
            # moments as (all rows) - (its validation rows).
            ones = torch.ones(n_classes, dtype=torch.float64, device=xt.device)
            parts = [_moments(xt, torch.as_tensor(val, device=xt.device), codes, ones, origin) for _, val in folds]
            total = parts[0]
            for p in parts[1:]:
                total = _Moments(*(getattr(total, f.name) + getattr(p, f.name) for f in dataclasses.fields(total)[:-1]), ones)
        for k, (train, val) in enumerate(folds):
            if opts["balanced"]:
                s = _solve(xt, torch.as_tensor(train, device=xt.device), codes, n_classes, **opts)
            else:
                s = _decompose(total - parts[k], origin, standardize=standardize)
            preds = _predict_rows(xt, torch.as_tensor(val, device=xt.device), s, alphas, dtype).cpu().numpy()
            per_fold.append([_cv_score(codes_np[val], p, scoring) for p in preds])
        cv_scores = np.mean(np.array(per_fold), axis=0)
    best = int(np.argmax(cv_scores))  # first of ties, as GridSearchCV's rank
    if len(alphas) > 1 and n_folds > 1 and not opts["balanced"]:
        full = _decompose(total, origin, standardize=standardize)
    else:
        full = _solve(xt, torch.arange(len(y), device=xt.device), codes, n_classes, **opts)
    return RidgeClassifier(classes, float(alphas[best]), alphas, cv_scores, full)
