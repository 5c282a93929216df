"""The fast NeWT SVM search makes scikit-learn's RandomizedSearchCV choices, draw for draw."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.model_selection
import sklearn.pipeline
import sklearn.preprocessing
import sklearn.svm

from biobench.fixtures import newt_like_features
from biobench.probes import svm


def task(seed, n=60, d=12, n_classes=2, signal=1.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.normal(size=(n, d)) + signal * np.eye(n_classes, d)[y]
    return x, y


def reference(x, y, seed, n_draws=svm.N_DRAWS):
    search = sklearn.model_selection.RandomizedSearchCV(
        sklearn.pipeline.make_pipeline(sklearn.preprocessing.StandardScaler(), sklearn.svm.SVC()),
        svm.search_space(),
        n_iter=n_draws,
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
    assert svm.best_index(np.array([np.nan, np.nan])) == 0  # BaseSearchCV: all ranked 1, the first wins


def test_twenty_newt_shaped_tasks_choose_as_randomized_search_cv():
    """Must show: the same parameters on >= 99% of 20 NeWT-shaped tasks (110 / 110 images), the same test predictions
    there, pooled accuracy within 0.2 points. Both sides run the same protocol with 10 draws (not 100) and d = 32, to
    keep the reference fast; every draw's mean CV accuracy is compared too."""
    n_draws = 10
    tasks = [newt_like_features(s, positives=0.5 if s % 4 else 0.4) for s in range(20)]
    ours = svm.fit_predict_many([(a, b, c) for a, b, c, _ in tasks], seed=7, n_draws=n_draws)
    same, hits_ref, hits_ours, ties = 0, 0, 0, 0
    for (x, y, x_test, y_test), (pred, params) in zip(tasks, ours):
        ref = reference(x, y, 7, n_draws=n_draws)
        ref_pred = ref.predict(x_test)
        means = svm.cv_scores(x, y, svm.draws(7, n_draws))
        assert np.allclose(means, ref.cv_results_["mean_test_score"], rtol=0, atol=1e-12, equal_nan=True)
        ties += np.sum(means == np.nanmax(means)) > 1
        same += params == {k: (v.item() if isinstance(v, np.generic) else v) for k, v in ref.best_params_.items()}
        same -= not np.array_equal(pred, ref_pred)
        hits_ref, hits_ours = hits_ref + np.sum(ref_pred == y_test), hits_ours + np.sum(pred == y_test)
    assert same / len(tasks) >= 0.99
    assert abs(hits_ours - hits_ref) / (len(tasks) * 110) * 100 <= 0.2
    assert ties > 0  # the tie-breaking (first draw) is exercised, not only clear winners


@pytest.mark.parametrize("seed, n, n_positive", [(1, 12, 2), (4, 11, 1)])
def test_unbalanced_samples_and_failed_folds(seed, n, n_positive):
    """A class with fewer members than folds (StratifiedKFold warns); with a single member, the fold that holds it
    out trains on one class and fails: NaN, ranked last, as `error_score=nan` gives."""
    x, _, x_test, _ = newt_like_features(seed, n_train=n, n_test=30, d=32)
    y = np.random.default_rng(seed).permutation(np.arange(n) < n_positive).astype(np.int64)
    params = svm.draws(seed, 20)  # 20 draws on both sides: the same protocol, a faster reference
    assert np.isnan(svm.fold_scores(x, y, params)).all(axis=0).any() == (n_positive == 1)
    ref = reference(x, y, seed, n_draws=20)
    assert np.allclose(svm.cv_scores(x, y, params), ref.cv_results_["mean_test_score"], atol=1e-12, equal_nan=True)
    pred, chosen = svm.fit_predict(x, y, x_test, seed=seed, n_draws=20)
    assert chosen == {k: (v.item() if isinstance(v, np.generic) else v) for k, v in ref.best_params_.items()}
    assert np.array_equal(pred, ref.predict(x_test))


def test_many_over_worker_processes_match_one_by_one():
    """`fit_predict_many` over 2 processes gives what `fit_predict` gives per problem, in order; labels need not be 0 / 1."""
    problems = [(x, np.where(y == 1, 7, 3), xt) for x, y, xt, _ in (newt_like_features(s, n_train=30, n_test=10, d=8) for s in range(5))]
    many = svm.fit_predict_many(problems, seed=1, n_jobs=2, n_draws=10)
    for (a, b, c), (pred, params) in zip(problems, many):
        one_pred, one_params = svm.fit_predict(a, b, c, seed=1, n_draws=10)
        assert np.array_equal(pred, one_pred) and params == one_params and set(pred) <= {3, 7}


def test_few_problems_split_by_fold_match_one_by_one():
    """Fewer problems than two per worker (Ages: 3 multi-class settings): the (problem, fold) searches and the refits are
    spread over the workers, with the same choices and predictions as `fit_predict`; small problems take the fallback."""
    rng = np.random.default_rng(3)
    problems = []
    for s, n in enumerate((60, 45, 8)):
        y = np.arange(n) % 3 + 10  # 3 classes, labels 10..12
        x = rng.normal(size=(n, 6)) + y[:, None] * 0.3
        problems.append((x, y, rng.normal(size=(12, 6)) + 3.3))
    many = svm.fit_predict_many(problems, seed=2, n_jobs=2, n_draws=12, min_per_class=5)
    assert len(many) == 3
    for (a, b, c), (pred, params) in zip(problems, many):
        one_pred, one_params = svm.fit_predict(a, b, c, seed=2, n_draws=12, min_per_class=5)
        assert np.array_equal(pred, one_pred) and params == one_params
    assert many[2][1] == {"svc__kernel": "linear", "svc__C": 1.0}  # 8 examples < min_train: the fallback
