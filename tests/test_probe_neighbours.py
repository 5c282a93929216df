"""kNN, SimpleShot and exemplar SVMs against scikit-learn's versions of the seed protocols."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.neighbors
import sklearn.svm

from biobench.probes import exemplar_svm, knn, simpleshot


def clusters(seed, n_classes=8, per=12, d=16, noise=1.2):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per)
    x = rng.normal(size=(n_classes, d))[y] + noise * rng.normal(size=(len(y), d)) + 3.0
    return x, y * 2 + 5


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 5])
def test_knn_matches_sklearn(metric, k):
    x, y = clusters(0)
    xq, _ = clusters(1, per=5)
    ref = sklearn.neighbors.KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute").fit(x, y)
    assert np.array_equal(knn.fit_predict(x, y, xq, k=k, metric=metric), ref.predict(xq))
    dist, idx = ref.kneighbors(xq)
    ours_idx, ours_dist = knn.neighbours(xq, x, k, metric=metric)
    assert np.array_equal(ours_idx, idx) and ours_dist == pytest.approx(dist, abs=1e-9)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_leave_one_out_matches_sklearn_excluding_self(metric):
    x, y = clusters(2)
    # scikit-learn's kneighbors() with no X leaves each point out of its own neighbours.
    idx = sklearn.neighbors.NearestNeighbors(n_neighbors=1, metric=metric, algorithm="brute").fit(x).kneighbors(return_distance=False)
    assert np.array_equal(knn.leave_one_out(x, y, metric=metric), y[idx[:, 0]])
    with pytest.raises(ValueError, match="neighbours asked"):
        knn.leave_one_out(x[:1], y[:1])


def test_simpleshot_matches_sklearn_nearest_centroid_after_centring_and_normalising():
    x, y = clusters(3, n_classes=10, per=6)
    xq, _ = clusters(4, n_classes=10, per=4)
    mean = x.mean(0, keepdims=True)
    norm = lambda a: (a - mean) / np.linalg.norm(a - mean, axis=1, keepdims=True)  # noqa: E731
    ref = sklearn.neighbors.NearestCentroid().fit(norm(x), y).predict(norm(xq))
    assert np.array_equal(simpleshot.fit_predict(x, y, xq), ref)
    # 1-shot (Birds525's protocol): each centroid is the one normalised example; the mean is over the shots.
    one = np.array([np.flatnonzero(y == c)[0] for c in np.unique(y)])
    m1 = x[one].mean(0, keepdims=True)
    norm1 = lambda a: (a - m1) / np.linalg.norm(a - m1, axis=1, keepdims=True)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NearestCentroid's variance of one example per class
        ref1 = sklearn.neighbors.NearestCentroid().fit(norm1(x[one]), y[one]).predict(norm1(xq))
    assert np.array_equal(simpleshot.fit_predict(x[one], y[one], xq), ref1)


def reference_exemplar_matches(x):
    """The seed's Leopard protocol: one LinearSVC per query, best NON-self decision value (seed bug fixed)."""
    out = []
    for i in range(len(x)):
        target = np.zeros(len(x))
        target[i] = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = sklearn.svm.LinearSVC(class_weight="balanced", max_iter=10000, tol=1e-6, C=0.1).fit(x, target)
        s = clf.decision_function(x)
        s[i] = -np.inf
        out.append(int(np.argmax(s)))
    return np.array(out)


def test_exemplar_svms_match_per_query_linear_svc():
    rng = np.random.default_rng(0)
    individuals = np.repeat(np.arange(50), 4)
    x = (rng.normal(size=(50, 24))[individuals] + 1.0 * rng.normal(size=(200, 24))).astype(np.float32)
    ref = reference_exemplar_matches(x)
    ours = exemplar_svm.best_matches(x)
    top1_ref = np.mean(individuals[ref] == individuals)
    top1_ours = exemplar_svm.leave_one_out(x, individuals).mean()
    assert abs(top1_ours - top1_ref) <= 0.01
    assert np.mean(ours == ref) >= 0.95  # the same best match, not only the same individual
    assert 0.3 < top1_ref < 0.95  # a task where the probe matters


def test_exemplar_svm_weights_solve_the_linear_svc_problem():
    """With enough iterations the batched solver reaches liblinear's optimum (decision values agree)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6))
    w = exemplar_svm.fit(x, n_iter=500, tol=1e-10, dtype=__import__("torch").float64).numpy()
    for i in (0, 17):
        target = np.zeros(40)
        target[i] = 1
        clf = sklearn.svm.LinearSVC(class_weight="balanced", max_iter=100000, tol=1e-10, C=0.1, dual=True).fit(x, target)
        assert x @ w[i, :-1] + w[i, -1] == pytest.approx(clf.decision_function(x), abs=2e-3)


def test_exemplar_svms_for_a_subset_of_queries_equal_those_rows_of_the_full_fit():
    x = np.random.default_rng(3).normal(size=(60, 8))
    full = exemplar_svm.best_matches(x, batch=16)
    some = np.array([5, 0, 41, 59])
    assert np.array_equal(exemplar_svm.best_matches(x, queries=some, batch=3), full[some])
