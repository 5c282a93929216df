"""NeWT's SVM search, batched: every draw x fold of many binary tasks solved at once (`biobench.probes.smo`).

It picks what `RandomizedSearchCV(make_pipeline(StandardScaler(), SVC()), search_space(),
n_iter=100, cv=5, random_state=seed)` picks (`biobench.probes.svm`):

- the same draws (scikit-learn's `ParameterSampler`) and folds (`StratifiedKFold(5)`, no
  shuffling), each fold standardised on its own training rows (`StandardScaler`);
- per fold one Gram matrix of the standardised features; every draw's kernel (rbf, linear,
  poly, sigmoid with libsvm's defaults) is an elementwise function of it;
- every distinct (task, draw, fold) problem is libsvm's dual solved by libsvm's own steps
  (`smo.solve`), variables in libsvm's order (its classes grouped, the lower label first as
  +1), validation rows predicted as libsvm predicts (decision > 0: the lower label);
- linear draws share their fold's kernel: the largest C is solved first and a smaller C
  whose bound no step reached has exactly its solution (copied, not solved again);
- fold accuracies, their mean, NaN for a fold with one class (`error_score=nan`), and the
  choice (highest mean, NaN last, ties to the first draw) as `BaseSearchCV` computes them.

Where the result could differ from libsvm: the solver leaves out libsvm's shrinking, so its
decision values agree with libsvm's to about 1e-4 rather than exactly. A validation
prediction with |decision| below `MARGIN` of its problem's largest is therefore "uncertain", which gives each draw's mean
accuracy a lower and an upper bound. Every draw whose upper bound reaches the best lower
bound (it could be the choice, or tie with it) and has uncertain predictions has those
folds re-solved by libsvm itself; the others cannot win. The choice is then the protocol's
whenever no certain prediction differs from libsvm's (the equivalence tests count both).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings

import numpy as np
import torch

from biobench.probes import smo, svm

MARGIN = 1e-3
"""A validation prediction is re-checked by libsvm when its |decision| is below MARGIN times the
largest |decision| of its problem's validation rows (observed gaps to libsvm: under 3e-5 of it)."""
CHUNK_BYTES = {"cpu": 512 * 2**20, "cuda": 16 * 2**30}
"""Kernel memory per solver batch."""
KERNELS = ("linear", "rbf", "poly", "sigmoid")


@dataclasses.dataclass
class _Fold:
    task: int
    fold: int
    train: np.ndarray  # training rows in solver order (reverse libsvm order)
    val: np.ndarray
    gram: torch.Tensor  # (nt, nt) of standardised training rows, solver order
    gram_val: torch.Tensor  # (nv, nt)
    sq: torch.Tensor
    sq_val: torch.Tensor
    y: torch.Tensor  # +1 for the lower label, solver order
    y_val: torch.Tensor


def _kernels(gram, sq_a, sq_b, spans: dict[str, tuple[int, int]], gamma: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    """(U, a, b): draw u's kernel from one fold's Gram matrix (`svm.kernel_from_gram`, batched);
    the draws are sorted by kernel, `spans[kernel]` the range of each; written into `out`."""
    for name, (start, stop) in spans.items():
        g, o = gamma[start:stop, None, None], out[start:stop]
        if start == stop:
            continue
        if name == "linear":
            o.copy_(gram.expand_as(o))
        elif name == "rbf":
            torch.exp(torch.mul(-g, sq_a[:, None] + sq_b[None, :] - 2 * gram, out=o), out=o)
        elif name == "poly":
            torch.mul(g, gram, out=o).pow_(3)
        else:
            torch.tanh(torch.mul(g, gram, out=o), out=o)
    return out


@contextlib.contextmanager
def single_threaded(device: str):
    """One torch and BLAS thread while the search runs on the CPU (restored after).

    Its arrays are small (a few hundred thousand elements per step): extra threads gain
    little and, on a machine shared with other work, make every step wait on the slowest
    thread (measured: several times slower with 2 threads on 2 busy cores).
    """
    if torch.device(device).type != "cpu":
        yield
        return
    import threadpoolctl

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpoolctl.threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def choose(tasks: list[tuple[np.ndarray, np.ndarray]], params: list[dict], *, device: str = "cpu", stats: dict | None = None) -> list[int]:
    """The index into `params` that the search picks for each binary (x_train, y_train).

    `stats` (when given) gains: problems (distinct draw x fold fits), solved (by the batched
    solver; the rest are copies), uncertain (validation predictions within `MARGIN`),
    resolved (draw x fold fits re-solved by libsvm).
    """
    import sklearn.model_selection
    import sklearn.preprocessing

    dev = torch.device(device)
    keys = [svm._draw_key(p) for p in params]
    unique = sorted(dict.fromkeys(keys), key=lambda k: KERNELS.index(k[0]))  # each kernel's draws together
    kernel = torch.tensor([KERNELS.index(k) for k, _, _ in unique], device=dev)
    names = [k for k, _, _ in unique]
    spans = {k: (names.index(k), len(names) - names[::-1].index(k)) for k in KERNELS if k in names}
    gamma = torch.tensor([g or 0.0 for _, _, g in unique], dtype=torch.float64, device=dev)
    c = torch.tensor([c for _, c, _ in unique], dtype=torch.float64, device=dev)
    n_folds = svm.N_FOLDS
    lo = np.full((len(tasks), len(unique), n_folds), np.nan)
    hi = lo.copy()
    folds: list[_Fold] = []
    for t, (x, y) in enumerate(tasks):
        x = np.asarray(x, dtype=np.float64)
        lower = y == np.unique(y)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a class with fewer members than folds: StratifiedKFold warns, as in the search
            splits = list(sklearn.model_selection.StratifiedKFold(n_splits=n_folds).split(x, y))
        for f, (train, val) in enumerate(splits):
            if lower[train].all() or not lower[train].any():
                continue  # one class: every fit fails, NaN as error_score=nan gives
            scaler = sklearn.preprocessing.StandardScaler().fit(x[train])  # on the search's own row order
            train = np.ascontiguousarray(np.r_[train[lower[train]], train[~lower[train]]][::-1])
            xt = torch.as_tensor((x[train] - scaler.mean_) / scaler.scale_, device=dev)  # as transform() computes it
            xv = torch.as_tensor((x[val] - scaler.mean_) / scaler.scale_, device=dev)
            sign = torch.as_tensor(np.where(lower, 1.0, -1.0), device=dev)
            folds.append(_Fold(t, f, train, val, xt @ xt.T, xv @ xt.T, (xt * xt).sum(1), (xv * xv).sum(1), sign[train], sign[val]))
    counts = {"problems": 0, "solved": 0, "uncertain": 0, "resolved": 0}
    linear = kernel == KERNELS.index("linear")
    rep = int(torch.argmax(torch.where(linear, c, -1.0))) if bool(linear.any()) else -1
    for batch in _batches(folds, len(unique), dev):
        _solve_batch(batch, spans, gamma, c, linear, rep, lo, hi, counts)
    counts["problems"] = len(folds) * len(unique)
    chosen = []
    where = {k: u for u, k in enumerate(unique)}
    for t, (x, y) in enumerate(tasks):
        with np.errstate(invalid="ignore"):
            m_lo, m_hi = np.mean(lo[t], axis=1), np.mean(hi[t], axis=1)
        if not np.isnan(m_lo).all():
            unsure = np.flatnonzero((m_hi >= np.nanmax(m_lo)) & (m_hi != m_lo))
            for u in unsure:
                for f in np.flatnonzero(lo[t, u] != hi[t, u]):
                    fold = next(fd for fd in folds if fd.task == t and fd.fold == f)
                    lo[t, u, f] = hi[t, u, f] = _libsvm_fold(x, y, fold, unique[u])
                    counts["resolved"] += 1
            m_hi = np.mean(hi[t], axis=1)  # exact where resolved; elsewhere an upper bound below the best
        chosen.append(svm.best_index(m_hi[[where[k] for k in keys]]))
    if stats is not None:
        for k, v in counts.items():
            stats[k] = stats.get(k, 0) + v
    return chosen


def _batches(folds: list[_Fold], n_unique: int, dev: torch.device):
    """Groups of folds whose problems (n_unique each) fit in one solver batch."""
    budget = CHUNK_BYTES["cuda" if dev.type == "cuda" else "cpu"]
    group, size = [], 0
    for fold in folds:
        nt, nv = len(fold.train), len(fold.val)
        cost = n_unique * (nt * nt * 24 + nv * nt * 8)  # kernel, curvature, validation kernel
        if group and size + cost > budget:
            yield group
            group, size = [], 0
        group.append(fold)
        size += cost
    if group:
        yield group


def _solve_batch(folds: list[_Fold], spans, gamma, c, linear, rep: int, lo, hi, counts) -> None:
    """Solve every draw of every fold in `folds` and write their fold accuracy bounds into lo / hi."""
    dev = c.device
    u_all = len(gamma)
    nt = max(len(f.train) for f in folds)
    nv = max(len(f.val) for f in folds)
    b = len(folds) * u_all
    padded = any(len(f.train) != nt or len(f.val) != nv for f in folds)
    new = torch.zeros if padded else torch.empty
    k32 = new((b, nt, nt), dtype=torch.float64, device=dev)  # float32 values, as libsvm caches them
    qd = new((b, nt), dtype=torch.float64, device=dev)
    y = new((b, nt), dtype=torch.float64, device=dev)
    kv = new((b, nv, nt), dtype=torch.float64, device=dev)
    yv = new((b, nv), dtype=torch.float64, device=dev)
    for i, f in enumerate(folds):
        a, v = len(f.train), len(f.val)
        s = slice(i * u_all, (i + 1) * u_all)
        kk = k32[s, :a, :a] if not padded else torch.empty((u_all, a, a), dtype=torch.float64, device=dev)
        _kernels(f.gram, f.sq, f.sq, spans, gamma, out=kk)
        qd[s, :a] = torch.diagonal(kk, dim1=1, dim2=2)
        k32[s, :a, :a] = kk.to(torch.float32)
        _kernels(f.gram_val, f.sq_val, f.sq, spans, gamma, out=kv[s, :v, :a])
        y[s, :a] = f.y
        yv[s, :v] = f.y_val
    cb = c.repeat(len(folds))
    lin = linear.repeat(len(folds))
    is_rep = torch.zeros(u_all, dtype=torch.bool, device=dev)
    if rep >= 0:
        is_rep[rep] = True
    is_rep = is_rep.repeat(len(folds))
    first = ~lin | is_rep  # nonlinear draws, and each fold's linear draw with the largest C
    alpha = torch.zeros((b, nt), dtype=torch.float64, device=dev)
    rho = torch.zeros(b, dtype=torch.float64, device=dev)
    idx = torch.nonzero(first).flatten()
    alpha[idx], rho[idx], _, peak = smo.solve(k32[idx], qd[idx], y[idx], cb[idx])
    solved = len(idx)
    if rep >= 0:
        rep_rows = torch.arange(len(folds), device=dev) * u_all + rep
        rep_peak = torch.zeros(b, dtype=torch.float64, device=dev)
        rep_peak[idx] = peak
        fold_peak = rep_peak[rep_rows].repeat_interleave(u_all)
        copy = lin & ~is_rep & (cb > fold_peak)  # no step reached this C: the same path, the same solution
        src = rep_rows.repeat_interleave(u_all)
        alpha[copy], rho[copy] = alpha[src[copy]], rho[src[copy]]
        idx = torch.nonzero(lin & ~is_rep & ~copy).flatten()
        if len(idx):
            alpha[idx], rho[idx], _, _ = smo.solve(k32[idx], qd[idx], y[idx], cb[idx])
            solved += len(idx)
    dec = torch.einsum("bvn,bn->bv", kv, alpha * y) - rho[:, None]
    valid = yv != 0
    correct = ((dec > 0) == (yv > 0)) & valid
    scale = torch.where(valid, dec.abs(), 0.0).amax(1, keepdim=True)
    unsure = (dec.abs() < MARGIN * scale) & valid
    n_val = valid.sum(1).to(torch.float64)
    f_lo = ((correct & ~unsure).sum(1) / n_val).reshape(len(folds), u_all).cpu().numpy()
    f_hi = ((correct | unsure).sum(1) / n_val).reshape(len(folds), u_all).cpu().numpy()
    for i, f in enumerate(folds):
        lo[f.task, :, f.fold], hi[f.task, :, f.fold] = f_lo[i], f_hi[i]
    counts["solved"] += solved
    counts["uncertain"] += int(unsure.sum())


def _libsvm_fold(x: np.ndarray, y: np.ndarray, fold: _Fold, key: tuple) -> float:
    """One fold's accuracy for one draw, by libsvm on the precomputed kernel (the uncertain cases)."""
    import sklearn.preprocessing
    import sklearn.svm

    kernel, c, gamma = key
    train = np.sort(fold.train)  # the search's own row order
    scaler = sklearn.preprocessing.StandardScaler().fit(x[train])
    xt, xv = scaler.transform(x[train]), scaler.transform(x[fold.val])
    sq_t, sq_v = np.einsum("ij,ij->i", xt, xt), np.einsum("ij,ij->i", xv, xv)
    clf = sklearn.svm.SVC(kernel="precomputed", C=c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(svm.kernel_from_gram(xt @ xt.T, sq_t, sq_t, kernel, gamma or 0.0), y[train])
        pred = clf.predict(svm.kernel_from_gram(xv @ xt.T, sq_v, sq_t, kernel, gamma or 0.0))
    return float(np.mean(pred == y[fold.val]))
