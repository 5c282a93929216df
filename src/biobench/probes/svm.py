"""The SVM protocol of NeWT (Van Horn et al., CVPR 2021) as biobench and small_data_metrics ran it.

With at least `MIN_SEARCH_TRAIN` training examples: standardise, then a randomised
search over an SVC's kernel (rbf, linear, sigmoid, poly), C (log-uniform 1e-3..10) and
gamma (log-uniform 1e-4..1e-3), 100 draws, 5-fold stratified cross-validation, refit on
all training data. Below that, a plain linear SVC (C = 1) on the unscaled features,
since 5-fold search is meaningless on a handful of images. With a single class in the
training sample the probe predicts that class.

The search makes the same choices as scikit-learn's `RandomizedSearchCV(make_pipeline(
StandardScaler(), SVC()), search_space(), n_iter=100, cv=5, random_state=seed)` (tested),
but runs faster:

- the 100 draws come from scikit-learn's own `ParameterSampler` with the same seed, so they
  are identical; identical draws (a linear kernel ignores gamma) are fitted once;
- every kernel in the space is an elementwise function of the Gram matrix of the
  standardised features, so each fold computes that matrix once and every draw fits
  libsvm on a precomputed kernel (no per-draw pipeline cloning, scaling or kernel work);
- fold scores, their means and the rank (NaN for a failed fit, ties to the first draw)
  follow `BaseSearchCV`; the refit is scikit-learn's own pipeline with the chosen params.
"""

from __future__ import annotations

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
    import sklearn.model_selection

    return list(sklearn.model_selection.ParameterSampler(search_space(), n_iter=n_draws, random_state=seed))


def kernel_from_gram(
    gram: Float[np.ndarray, "a b"], sq_a: Float[np.ndarray, " a"], sq_b: Float[np.ndarray, " b"], kernel: str, gamma: float
) -> Float[np.ndarray, "a b"]:
    """libsvm's kernels (SVC defaults degree=3, coef0=0) from dot products and squared norms."""
    if kernel == "linear":
        return gram
    if kernel == "rbf":
        return np.exp(-gamma * (sq_a[:, None] + sq_b[None, :] - 2 * gram))
    if kernel == "poly":
        return (gamma * gram) ** 3
    if kernel == "sigmoid":
        return np.tanh(gamma * gram)
    raise ValueError(f"Unknown kernel {kernel!r}.")


def _draw_key(params: dict) -> tuple:
    kernel = params["svc__kernel"]
    return (kernel, float(params["svc__C"]), None if kernel == "linear" else float(params["svc__gamma"]))


def cv_scores(
    x: Float[np.ndarray, "n d"], y: Int[np.ndarray, " n"], params: list[dict], *, n_folds: int = N_FOLDS
) -> Float[np.ndarray, " k"]:
    """Mean accuracy over stratified folds for every parameter draw (NaN where a fit fails)."""
    import sklearn.model_selection
    import sklearn.preprocessing
    import sklearn.svm

    keys = [_draw_key(p) for p in params]
    unique = list(dict.fromkeys(keys))
    fold_scores = np.full((len(unique), n_folds), np.nan)
    folds = sklearn.model_selection.StratifiedKFold(n_splits=n_folds).split(x, y)
    for f, (train, val) in enumerate(folds):
        scaler = sklearn.preprocessing.StandardScaler().fit(x[train])
        xt, xv = scaler.transform(x[train]), scaler.transform(x[val])
        g_tt, g_vt = xt @ xt.T, xv @ xt.T
        sq_t, sq_v = np.einsum("ij,ij->i", xt, xt), np.einsum("ij,ij->i", xv, xv)
        for u, (kernel, c, gamma) in enumerate(unique):
            clf = sklearn.svm.SVC(kernel="precomputed", C=c)
            try:
                clf.fit(kernel_from_gram(g_tt, sq_t, sq_t, kernel, gamma or 0.0), y[train])
            except ValueError:
                continue  # e.g. one class in the fold: scored NaN, as error_score=nan does
            pred = clf.predict(kernel_from_gram(g_vt, sq_v, sq_t, kernel, gamma or 0.0))
            fold_scores[u, f] = np.mean(pred == y[val])
    means = np.mean(fold_scores, axis=1)
    where = {k: i for i, k in enumerate(unique)}
    return means[[where[k] for k in keys]]


def best_index(means: Float[np.ndarray, " k"]) -> int:
    """BaseSearchCV's choice: the highest mean, failures (NaN) ranked last, ties to the first."""
    if np.isnan(means).all():
        raise ValueError("Every fit of the SVM search failed; the training sample is too small or has one class per fold.")
    return int(np.argmax(np.where(np.isnan(means), -np.inf, means)))


def fit_predict(
    x_train: Float[np.ndarray, "n d"],
    y_train: Int[np.ndarray, " n"],
    x_test: Float[np.ndarray, "m d"],
    *,
    seed: int,
    min_train: int = MIN_SEARCH_TRAIN,
    min_per_class: int = 0,
    device: str = "cpu",
) -> tuple[Int[np.ndarray, " m"], dict]:
    """Fit the NeWT SVM protocol and predict `x_test`. Returns (predictions, chosen hyper-parameters).

    The small-data fallback, a plain linear SVC (C = 1) on the features as given, replaces
    the search when there are fewer than `min_train` training examples or some class has
    fewer than `min_per_class` (the search's stratified folds need one of each per fold).
    """
    ((pred, params),) = fit_predict_many(
        [(x_train, y_train, x_test)], seed=seed, min_train=min_train, min_per_class=min_per_class, device=device
    )
    return pred, params


def fit_predict_many(
    problems: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    seed: int,
    min_train: int = MIN_SEARCH_TRAIN,
    min_per_class: int = 0,
    device: str = "cpu",
    stats: dict | None = None,
) -> list[tuple[np.ndarray, dict]]:
    """`fit_predict` for many (x_train, y_train, x_test) at once: the binary searches share batches.

    Binary searches run on `biobench.probes.search` (every draw and fold of every problem
    solved together, on `device`); multi-class ones on libsvm draw by draw (`cv_scores`).
    `stats`, when given, is updated with the batched search's counts (see `search.choose`).
    """
    from biobench.probes import search

    out: list = [None] * len(problems)
    params = draws(seed)
    binary = []
    for p, (x_train, y_train, x_test) in enumerate(problems):
        classes, counts = np.unique(y_train, return_counts=True)
        if len(classes) == 1:
            out[p] = (np.full(len(x_test), classes[0]), {"constant": int(classes[0])})
        elif len(y_train) < min_train or counts.min() < min_per_class:
            out[p] = _fallback(x_train, y_train, x_test)
        elif len(classes) == 2:
            binary.append(p)
        else:
            with warnings.catch_warnings():
                # Some draws (e.g. sigmoid kernels on few examples) fail to converge or leave a
                # fold with one class; the search scores them as failures, which is the protocol.
                warnings.simplefilter("ignore")
                means = cv_scores(np.asarray(x_train, dtype=np.float64), y_train, params)
            out[p] = _refit(x_train, y_train, x_test, params[best_index(means)])
    if binary:
        with search.single_threaded(device):
            chosen = search.choose([(problems[p][0], problems[p][1]) for p in binary], params, device=device, stats=stats)
            for p, best in zip(binary, chosen):
                out[p] = _refit(problems[p][0], problems[p][1], problems[p][2], params[best])
    return out


def _fallback(x_train, y_train, x_test) -> tuple[np.ndarray, dict]:
    import sklearn.svm

    clf = sklearn.svm.SVC(kernel="linear")
    clf.fit(np.asarray(x_train, dtype=np.float64), y_train)
    return clf.predict(np.asarray(x_test, dtype=np.float64)), {"svc__kernel": "linear", "svc__C": 1.0}


def _refit(x_train, y_train, x_test, best: dict) -> tuple[np.ndarray, dict]:
    """The search's refit: standardise on all training rows, libsvm with the chosen draw.

    libsvm on the draw's kernel, precomputed from one Gram matrix (as the search's folds
    are), rather than `make_pipeline(StandardScaler(), SVC(**best))`: the same solver and
    the same predictions (tested), without libsvm's per-pair kernel evaluations in d dims.
    """
    import sklearn.preprocessing
    import sklearn.svm

    x_train = np.asarray(x_train, dtype=np.float64)
    scaler = sklearn.preprocessing.StandardScaler().fit(x_train)
    xt = (x_train - scaler.mean_) / scaler.scale_
    xv = (np.asarray(x_test, dtype=np.float64) - scaler.mean_) / scaler.scale_
    kernel, c, gamma = _draw_key(best)
    sq_t, sq_v = np.einsum("ij,ij->i", xt, xt), np.einsum("ij,ij->i", xv, xv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = sklearn.svm.SVC(kernel="precomputed", C=c).fit(kernel_from_gram(xt @ xt.T, sq_t, sq_t, kernel, gamma or 0.0), y_train)
    chosen = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in best.items()}
    return clf.predict(kernel_from_gram(xv @ xt.T, sq_v, sq_t, kernel, gamma or 0.0)), chosen
