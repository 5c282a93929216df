"""The fast NeWT SVM search makes scikit-learn's RandomizedSearchCV choices, draw for draw."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.model_selection
import sklearn.pipeline
import sklearn.preprocessing
import sklearn.svm

from biobench.probes import svm


def task(seed, n=60, d=12, n_classes=2, signal=1.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.normal(size=(n, d)) + signal * np.eye(n_classes, d)[y]
    return x, y


def reference(x, y, seed):
    search = sklearn.model_selection.RandomizedSearchCV(
        sklearn.pipeline.make_pipeline(sklearn.preprocessing.StandardScaler(), sklearn.svm.SVC()),
        svm.search_space(),
        n_iter=svm.N_DRAWS,
        cv=svm.N_FOLDS,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return search.fit(x, y)


@pytest.mark.parametrize("seed, n, n_classes, signal", [(0, 60, 2, 1.0), (1, 40, 2, 0.3), (2, 45, 3, 1.5), (3, 12, 2, 0.8)])
def test_search_matches_randomized_search_cv(seed, n, n_classes, signal):
    x, y = task(seed, n=n, n_classes=n_classes, signal=signal)
    x_test, _ = task(seed + 100, n=50, n_classes=n_classes, signal=signal)
    ref = reference(x, y, seed)
    assert [svm._draw_key(p) for p in svm.draws(seed)] == [svm._draw_key(p) for p in ref.cv_results_["params"]]
    means = svm.cv_scores(x, y, svm.draws(seed))
    assert np.allclose(means, ref.cv_results_["mean_test_score"], equal_nan=True, atol=1e-12)
    pred, params = svm.fit_predict(x, y, x_test, seed=seed)
    assert params == {k: (v.item() if isinstance(v, np.generic) else v) for k, v in ref.best_params_.items()}
    assert np.array_equal(pred, ref.predict(x_test))


def test_kernels_from_gram_match_sklearn_pairwise():
    import sklearn.metrics.pairwise as pw

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    g, sa, sb = a @ b.T, (a * a).sum(1), (b * b).sum(1)
    assert np.allclose(svm.kernel_from_gram(g, sa, sb, "rbf", 0.3), pw.rbf_kernel(a, b, gamma=0.3))
    assert np.allclose(svm.kernel_from_gram(g, sa, sb, "poly", 0.3), pw.polynomial_kernel(a, b, degree=3, gamma=0.3, coef0=0))
    assert np.allclose(svm.kernel_from_gram(g, sa, sb, "sigmoid", 0.3), pw.sigmoid_kernel(a, b, gamma=0.3, coef0=0))
    with pytest.raises(ValueError):
        svm.kernel_from_gram(g, sa, sb, "cubic", 0.3)


def test_small_and_single_class_training_sets():
    x, y = task(0, n=8)
    pred, params = svm.fit_predict(x, y, x, seed=0)
    assert params == {"svc__kernel": "linear", "svc__C": 1.0}
    assert np.array_equal(pred, sklearn.svm.SVC(kernel="linear").fit(x, y).predict(x))
    pred, params = svm.fit_predict(x, np.ones(8, dtype=int), x, seed=0)
    assert params == {"constant": 1} and (pred == 1).all()


def test_best_index_ranks_failures_last_and_ties_first():
    assert svm.best_index(np.array([np.nan, 0.5, 0.7, 0.7])) == 2
    with pytest.raises(ValueError, match="failed"):
        svm.best_index(np.array([np.nan, np.nan]))
