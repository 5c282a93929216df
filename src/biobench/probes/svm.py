"""The SVM protocol of NeWT (Van Horn et al., CVPR 2021) as biobench and small_data_metrics ran it.

With at least `MIN_SEARCH_TRAIN` training examples: standardise, then a randomised
search over an SVC's kernel (rbf, linear, sigmoid, poly), C (log-uniform 1e-3..10) and
gamma (log-uniform 1e-4..1e-3), 100 draws, 5-fold stratified cross-validation, refit on
all training data. Below that, a plain linear SVC (C = 1) on the unscaled features,
since 5-fold search is meaningless on a handful of images. With a single class in the
training sample the probe predicts that class.

The search makes the same choices as scikit-learn's `RandomizedSearchCV(make_pipeline(
StandardScaler(), SVC()), search_space(), n_iter=100, cv=5, random_state=seed)` (tested),
with the same solver (libsvm, as scikit-learn ships it) but without scikit-learn's
per-fit overhead, which is most of the seed's time on these 88-example problems:

- the 100 draws come from scikit-learn's own `ParameterSampler` with the same seed, so they
  are identical; identical draws (a linear kernel ignores gamma) are fitted once;
- the folds are `StratifiedKFold(5)`'s, each standardised on its own training rows
  (`StandardScaler`, as the pipeline does);
- every kernel in the space is an elementwise function of the Gram matrix of the
  standardised features, so each fold computes that matrix once, each kernel family's
  matrices for all its draws in one vectorised step, and the linear kernel once for every C;
- each draw is one call of libsvm itself (`sklearn.svm._libsvm.fit` / `predict`, kernel
  "precomputed", SVC's defaults: tol 1e-3, shrinking, cache 200 MB, labels encoded as
  `SVC` encodes them), skipping `SVC`'s validation, cloning and pipeline steps;
- fold accuracies, their mean (`np.average` over folds, as `BaseSearchCV`), NaN for a
  failed fit (one class in a fold, non-finite duals: `error_score=nan`), and the choice
  (highest mean, NaN last, ties to the first draw) follow `BaseSearchCV`; the refit
  is libsvm on the chosen draw's kernel of all training rows.

The only difference from the seed is float rounding: libsvm there evaluates each kernel
entry from the d-dimensional rows itself, here from a BLAS Gram matrix, so entries agree to
~1e-16 relative, and a fold's prediction could flip only where a decision value is that
close to zero (`benchmarks/newt_search.py` counts the draws whose mean accuracy differs).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import scipy.stats
from jaxtyping import Float, Int

MIN_SEARCH_TRAIN = 10
N_DRAWS = 100
N_FOLDS = 5


def search_space() -> dict:
    return {
        "svc__C": scipy.stats.loguniform(a=1e-3, b=1e1),
        "svc__kernel": ["rbf", "linear", "sigmoid", "poly"],
        "svc__gamma": scipy.stats.loguniform(a=1e-4, b=1e-3),
    }


def draws(seed: int, n_draws: int = N_DRAWS) -> list[dict]:
    """The parameter draws `RandomizedSearchCV(..., random_state=seed)` evaluates, in its order."""
    return [dict(p) for p in _draws(seed, n_draws)]


@functools.lru_cache(maxsize=16)
def _draws(seed: int, n_draws: int) -> tuple[dict, ...]:
    import sklearn.model_selection

    return tuple(sklearn.model_selection.ParameterSampler(search_space(), n_iter=n_draws, random_state=seed))


def kernel_from_gram(
    gram: Float[np.ndarray, "a b"], sq_a: Float[np.ndarray, " a"], sq_b: Float[np.ndarray, " b"], kernel: str, gamma: float
) -> Float[np.ndarray, "a b"]:
    """libsvm's kernels (SVC defaults degree=3, coef0=0) from dot products and squared norms, in libsvm's order of operations."""
    if kernel == "linear":
        return gram
    if kernel == "rbf":
        return np.exp(-gamma * (sq_a[:, None] + sq_b[None, :] - 2 * gram))
    if kernel == "poly":
        base = gamma * gram
        return base * (base * base)  # libsvm's powi(base, 3); also far faster than ** 3
    if kernel == "sigmoid":
        return np.tanh(gamma * gram)
    raise ValueError(f"Unknown kernel {kernel!r}.")


def _kernels(gram, sq_a, sq_b, kernel: str, gammas: np.ndarray) -> np.ndarray:
    """(len(gammas), a, b): `kernel_from_gram` for every gamma at once (the same arithmetic, elementwise)."""
    g = np.asarray(gammas, dtype=np.float64)[:, None, None]
    if kernel == "rbf":
        return np.exp(-g * (sq_a[:, None] + sq_b[None, :] - 2 * gram)[None])
    if kernel == "poly":
        base = g * gram[None]
        return base * (base * base)
    if kernel == "sigmoid":
        return np.tanh(g * gram[None])
    raise ValueError(f"Unknown kernel {kernel!r}.")


def _draw_key(params: dict) -> tuple:
    kernel = params["svc__kernel"]
    return (kernel, float(params["svc__C"]), None if kernel == "linear" else float(params["svc__gamma"]))


class _Fold:
    """One training set, standardised, its Gram matrices with the rows to predict, and each draw's kernels."""

    def __init__(self, x_train: np.ndarray, x_pred: np.ndarray, keys: list[tuple]):
        import sklearn.preprocessing

        scaler = sklearn.preprocessing.StandardScaler().fit(x_train)
        xt, xv = scaler.transform(x_train), scaler.transform(x_pred)
        self.gram, self.gram_pred = xt @ xt.T, xv @ xt.T
        self.sq, self.sq_pred = np.einsum("ij,ij->i", xt, xt), np.einsum("ij,ij->i", xv, xv)
        self.kernels: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        for kernel in ("rbf", "poly", "sigmoid"):
            gammas = sorted({g for k, _, g in keys if k == kernel})
            if gammas:
                kt = _kernels(self.gram, self.sq, self.sq, kernel, gammas)
                kv = _kernels(self.gram_pred, self.sq_pred, self.sq, kernel, gammas)
                self.kernels.update({(kernel, g): (kt[i], kv[i]) for i, g in enumerate(gammas)})
        self.kernels[("linear", None)] = (self.gram, self.gram_pred)

    def kernel(self, key: tuple) -> tuple[np.ndarray, np.ndarray]:
        kernel, _, gamma = key
        return self.kernels[(kernel, gamma)]


def _encode(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SVC's label encoding: (classes in `np.unique` order, float64 codes, class weights: all 1)."""
    classes, codes = np.unique(y, return_inverse=True)
    return classes, codes.astype(np.float64), np.ones(len(classes))


_NO_WEIGHTS = np.empty(0)


def _libsvm_fit_predict(k_train: np.ndarray, labels: tuple, k_pred: np.ndarray, c: float) -> np.ndarray | None:
    """`SVC(kernel="precomputed", C=c).fit(k_train, y).predict(k_pred)` by libsvm directly; None where SVC's fit raises.

    `labels` is `_encode(y)`. The same calls `SVC._dense_fit` / `_dense_predict` make, with
    SVC's defaults and its label encoding, so the same solver steps and the same predictions.
    """
    from sklearn.svm import _libsvm

    classes, codes, class_weight = labels
    _libsvm.set_verbosity_wrap(0)  # as SVC(verbose=False) sets it
    if len(classes) < 2:
        return None  # SVC: "The number of classes has to be greater than one"
    support, sv, n_support, dual, intercept, prob_a, prob_b, _, _ = _libsvm.fit(
        k_train, codes, svm_type=0, sample_weight=_NO_WEIGHTS, class_weight=class_weight,
        kernel="precomputed", C=c, nu=0.5, probability=False, degree=3, shrinking=True, tol=1e-3, cache_size=200,
        coef0=0.0, gamma=0.0, epsilon=0.1, max_iter=-1, random_seed=0,
    )  # fmt: skip
    if not (np.isfinite(intercept).all() and np.isfinite(dual).all()):
        return None  # SVC: "The dual coefficients or intercepts are not finite"
    pred = _libsvm.predict(
        k_pred, support, sv, n_support, dual, intercept, prob_a, prob_b,
        svm_type=0, kernel="precomputed", degree=3, coef0=0.0, gamma=0.0, cache_size=200,
    )  # fmt: skip
    return classes[pred.astype(np.intp)]


def _splits(x: np.ndarray, y: np.ndarray, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    import sklearn.model_selection

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class with fewer members than folds: StratifiedKFold warns, as in the search
        return list(sklearn.model_selection.StratifiedKFold(n_splits=n_folds).split(x, y))


def _fold_column(x: np.ndarray, y: np.ndarray, unique: list[tuple], train: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Accuracy of each distinct draw (`unique` keys) on one fold (NaN where the fit fails)."""
    col = np.full(len(unique), np.nan)
    if len(np.unique(y[train])) < 2:
        return col  # every fit fails: NaN, as error_score=nan gives
    fold, labels, y_val = _Fold(x[train], x[val], unique), _encode(y[train]), y[val]
    for u, key in enumerate(unique):
        k_train, k_val = fold.kernel(key)
        pred = _libsvm_fit_predict(k_train, labels, k_val, key[1])
        if pred is not None:
            col[u] = np.count_nonzero(pred == y_val) / len(y_val)  # accuracy_score's value
    return col


def fold_scores(
    x: Float[np.ndarray, "n d"], y: Int[np.ndarray, " n"], params: list[dict], *, n_folds: int = N_FOLDS
) -> Float[np.ndarray, "k f"]:
    """Accuracy on every stratified fold for every parameter draw (NaN where the fit fails)."""
    x = np.asarray(x, dtype=np.float64)
    keys = [_draw_key(p) for p in params]
    unique = list(dict.fromkeys(keys))
    scores = np.stack([_fold_column(x, y, unique, train, val) for train, val in _splits(x, y, n_folds)], axis=1)
    where = {k: i for i, k in enumerate(unique)}
    return scores[[where[k] for k in keys]]


def cv_scores(
    x: Float[np.ndarray, "n d"], y: Int[np.ndarray, " n"], params: list[dict], *, n_folds: int = N_FOLDS
) -> Float[np.ndarray, " k"]:
    """Mean accuracy over stratified folds for every parameter draw (NaN where a fit fails), as `BaseSearchCV` averages."""
    return np.average(fold_scores(x, y, params, n_folds=n_folds), axis=1)


def best_index(means: Float[np.ndarray, " k"]) -> int:
    """BaseSearchCV's choice: the highest mean, failures (NaN) ranked last, ties to the first.

    When every mean is NaN (e.g. one fold trains on a single class, so every draw has a NaN
    fold) BaseSearchCV ranks them all first and takes the first draw; so does this.
    """
    if np.isnan(means).all():
        return 0
    return int(np.argmax(np.where(np.isnan(means), -np.inf, means)))


def fit_predict(
    x_train: Float[np.ndarray, "n d"],
    y_train: Int[np.ndarray, " n"],
    x_test: Float[np.ndarray, "m d"],
    *,
    seed: int,
    min_train: int = MIN_SEARCH_TRAIN,
    min_per_class: int = 0,
    n_draws: int = N_DRAWS,
) -> tuple[Int[np.ndarray, " m"], dict]:
    """Fit the NeWT SVM protocol and predict `x_test`. Returns (predictions, chosen hyper-parameters).

    The small-data fallback, a plain linear SVC (C = 1) on the features as given, replaces
    the search when there are fewer than `min_train` training examples or some class has
    fewer than `min_per_class` (the search's stratified folds need one of each per fold).
    `n_draws` is the search's `n_iter` (the protocol's 100; fewer only in tests).
    """
    import sklearn.svm

    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    classes, counts = np.unique(y_train, return_counts=True)
    if len(classes) == 1:
        return np.full(len(x_test), classes[0]), {"constant": int(classes[0])}
    if len(y_train) < min_train or counts.min() < min_per_class:
        clf = sklearn.svm.SVC(kernel="linear").fit(x_train, y_train)
        return clf.predict(x_test), {"svc__kernel": "linear", "svc__C": 1.0}
    params = draws(seed, n_draws)
    return _refit(x_train, y_train, x_test, params, fold_scores(x_train, y_train, params))


def _refit(x_train, y_train, x_test, params: list[dict], scores: np.ndarray) -> tuple[np.ndarray, dict]:
    """The search's choice from the (draw, fold) `scores`, refit on all training rows, predictions of `x_test`."""
    if np.isnan(scores).all():  # RandomizedSearchCV raises too ("All the ... fits failed")
        raise ValueError(f"Every fit of the SVM search failed on {len(y_train)} training examples; no fold has two classes.")
    best = params[best_index(np.average(scores, axis=1))]
    # The refit: standardised on all training rows, libsvm with the chosen draw's kernel.
    key = _draw_key(best)
    k_train, k_test = _Fold(x_train, x_test, [key]).kernel(key)
    pred = _libsvm_fit_predict(k_train, _encode(y_train), k_test, key[1])
    if pred is None:
        raise ValueError(f"The SVM refit with {best} failed (non-finite dual coefficients); the features may hold NaN or inf.")
    return pred, {k: (v.item() if isinstance(v, np.generic) else v) for k, v in best.items()}


def _fit_predict_chunk(problems, kwargs) -> list:
    import threadpoolctl

    with threadpoolctl.threadpool_limits(1):  # 88 x 88 kernels: one BLAS thread per worker is fastest
        return [fit_predict(*p, **kwargs) for p in problems]


def fit_predict_many(
    problems: list[tuple[np.ndarray, np.ndarray, np.ndarray]], *, n_jobs: int = 1, **kwargs
) -> list[tuple[np.ndarray, dict]]:
    """`fit_predict(x_train, y_train, x_test, **kwargs)` for each problem, over `n_jobs` worker processes.

    The problems are independent; each worker takes a contiguous share (what the probe
    route does for a task's sub-tasks through `Probe.parallel`). With fewer problems than
    two per worker (Ages: 3), the unit of work is one (problem, fold) search, then one
    refit (`_fit_predict_by_fold`); the same computations, so the same results. One
    process when `n_jobs` is 1.
    """
    if 1 < n_jobs and len(problems) < 2 * n_jobs:
        return _fit_predict_by_fold(problems, n_jobs=n_jobs, **kwargs)
    n_jobs = min(n_jobs, len(problems) // 2)
    if n_jobs <= 1:
        return _fit_predict_chunk(problems, kwargs)
    import joblib

    bounds = np.linspace(0, len(problems), n_jobs + 1).astype(int)
    chunks = joblib.Parallel(n_jobs=n_jobs)(
        joblib.delayed(_fit_predict_chunk)(problems[a:b], kwargs) for a, b in zip(bounds[:-1], bounds[1:])
    )
    return [out for chunk in chunks for out in chunk]


def _fold_unit(x, y, unique, train, val) -> np.ndarray:
    import threadpoolctl

    with threadpoolctl.threadpool_limits(1):
        return _fold_column(x, y, unique, train, val)


def _refit_unit(x_train, y_train, x_test, params, scores) -> tuple[np.ndarray, dict]:
    import threadpoolctl

    with threadpoolctl.threadpool_limits(1):
        return _refit(x_train, y_train, x_test, params, scores)


def _fit_predict_by_fold(
    problems: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    n_jobs: int,
    seed: int,
    min_train: int = MIN_SEARCH_TRAIN,
    min_per_class: int = 0,
    n_draws: int = N_DRAWS,
) -> list[tuple[np.ndarray, dict]]:
    """`fit_predict` for each problem with every (problem, fold) search, then every refit, over `n_jobs` workers."""
    import joblib

    out: list = [None] * len(problems)
    searched = []  # (index, x_train, y_train, x_test, params, unique keys, splits)
    for i, (x_train, y_train, x_test) in enumerate(problems):
        _, counts = np.unique(y_train, return_counts=True)
        if len(counts) == 1 or len(y_train) < min_train or counts.min() < min_per_class:
            out[i] = fit_predict(x_train, y_train, x_test, seed=seed, min_train=min_train, min_per_class=min_per_class, n_draws=n_draws)
            continue
        x, xt = np.asarray(x_train, dtype=np.float64), np.asarray(x_test, dtype=np.float64)
        params = draws(seed, n_draws)
        unique = list(dict.fromkeys(_draw_key(p) for p in params))
        searched.append((i, x, np.asarray(y_train), xt, params, unique, _splits(x, y_train, N_FOLDS)))
    if not searched:
        return out
    with joblib.Parallel(n_jobs=n_jobs) as pool:
        columns = pool(
            joblib.delayed(_fold_unit)(x, y, unique, train, val) for _, x, y, _, _, unique, splits in searched for train, val in splits
        )
        refits, c = [], 0
        for _, x, y, xt, params, unique, splits in searched:
            scores = np.stack(columns[c : c + len(splits)], axis=1)
            c += len(splits)
            where = {k: u for u, k in enumerate(unique)}
            refits.append(joblib.delayed(_refit_unit)(x, y, xt, params, scores[[where[_draw_key(p)] for p in params]]))
        for (i, *_), result in zip(searched, pool(refits)):
            out[i] = result
    return out
