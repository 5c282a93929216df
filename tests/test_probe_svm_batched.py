"""The batched NeWT search (`probes.smo`, `probes.search`) against libsvm and RandomizedSearchCV."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.model_selection
import sklearn.pipeline
import sklearn.preprocessing
import sklearn.svm
import threadpoolctl
import torch

from biobench.probes import Svm, search, smo, svm


def newt_like(seed: int, n_train: int = 110, n_test: int = 110, d: int = 32, positives: float = 0.5):
    """A NeWT-shaped binary task: one informative direction of random strength, an offset, L2 / centre / L2."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = (rng.permutation(n) < round(positives * n)).astype(np.int64)
    w = rng.normal(size=d)
    x = rng.normal(size=(n, d)) + rng.uniform(0.3, 2.5) * np.outer(2 * y - 1, w / np.linalg.norm(w)) + rng.normal(size=d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x -= x[:n_train].mean(0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def reference(x, y, seed):
    search_cv = sklearn.model_selection.RandomizedSearchCV(
        sklearn.pipeline.make_pipeline(sklearn.preprocessing.StandardScaler(), sklearn.svm.SVC()),
        svm.search_space(), n_iter=svm.N_DRAWS, cv=svm.N_FOLDS, random_state=seed,
    )  # fmt: skip
    with warnings.catch_warnings(), threadpoolctl.threadpool_limits(1):  # many BLAS threads crawl on a busy machine
        warnings.simplefilter("ignore")
        return search_cv.fit(x, y)


def plain(params: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


@pytest.mark.parametrize("kernel, gamma", [("linear", None), ("rbf", 5e-4), ("poly", 9e-4), ("sigmoid", 8e-4)])
def test_smo_takes_libsvm_steps(kernel, gamma):
    """Same iterations, duals and intercepts as libsvm (sigmoid kernels are indefinite: the same local solution)."""
    x, y, _, _ = newt_like(0, n_train=60, d=200)
    x = sklearn.preprocessing.StandardScaler().fit_transform(x)
    gram, sq = x @ x.T, (x * x).sum(1)
    k = svm.kernel_from_gram(gram, sq, sq, kernel, gamma or 0.0)
    order = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)][::-1]  # libsvm's order, reversed
    cs = [1e-3, 0.05, 1.0, 8.0]
    kk = torch.tensor(k[np.ix_(order, order)]).expand(len(cs), -1, -1)
    sign = torch.tensor(np.where(y[order] == 0, 1.0, -1.0)).expand(len(cs), -1)
    alpha, rho, iters, _ = smo.solve(kk.float().double(), torch.diagonal(kk, dim1=1, dim2=2), sign, torch.tensor(cs))
    for b, c in enumerate(cs):
        clf = sklearn.svm.SVC(kernel="precomputed", C=c).fit(k, y)
        ref = np.zeros(len(y))
        ref[clf.support_] = np.abs(clf.dual_coef_[0])
        assert int(iters[b]) == int(clf.n_iter_[0])
        assert np.allclose(alpha[b].numpy(), ref[order], atol=1e-6 * c, rtol=0)
        assert rho[b].item() == pytest.approx(clf.intercept_[0], abs=1e-6)


def test_twenty_newt_shaped_tasks_choose_as_randomized_search_cv():
    """Must show: the same parameters on >= 99% of 20 tasks, the same test predictions there, pooled accuracy within 0.2 points."""
    tasks = [newt_like(s, positives=0.5 if s % 4 else 0.4) for s in range(20)]
    stats: dict = {}
    ours = svm.fit_predict_many([(a, b, c) for a, b, c, _ in tasks], seed=7, stats=stats)
    same, hits_ref, hits_ours = 0, 0, 0
    for (x, y, x_test, y_test), (pred, params) in zip(tasks, ours):
        ref = reference(x, y, 7)
        ref_pred = ref.predict(x_test)
        same += params == plain(ref.best_params_) and np.array_equal(pred, ref_pred)
        hits_ref, hits_ours = hits_ref + np.sum(ref_pred == y_test), hits_ours + np.sum(pred == y_test)
    assert same / len(tasks) >= 0.99
    assert abs(hits_ours - hits_ref) / (len(tasks) * 110) * 100 <= 0.2
    assert stats["problems"] == 20 * 5 * len(set(svm._draw_key(p) for p in svm.draws(7)))
    assert stats["solved"] < stats["problems"]  # linear draws whose C never binds are copies


@pytest.mark.parametrize("seed, n, positives", [(0, 40, 0.5), (1, 12, 0.2), (2, 23, 0.3)])
def test_small_and_unbalanced_samples_including_failed_folds(seed, n, positives):
    """A class with fewer members than folds leaves some folds with one class: NaN, ranked last, as the search does."""
    x, y, x_test, _ = newt_like(seed, n_train=n, n_test=30, d=32, positives=positives)
    ref = reference(x, y, seed)
    pred, params = svm.fit_predict(x, y, x_test, seed=seed)
    assert params == plain(ref.best_params_)
    assert np.array_equal(pred, ref.predict(x_test))


def test_uncertain_predictions_are_settled_by_libsvm(monkeypatch):
    """With every validation prediction marked uncertain, the contenders are re-solved by libsvm: the same choice."""
    tasks = [newt_like(s, n_train=40, n_test=20, d=16) for s in range(2)]
    want = [svm.fit_predict(x, y, xt, seed=0)[1] for x, y, xt, _ in tasks]
    monkeypatch.setattr(search, "MARGIN", 2.0)
    stats: dict = {}
    got = svm.fit_predict_many([(x, y, xt) for x, y, xt, _ in tasks], seed=0, stats=stats)
    assert [p for _, p in got] == want
    assert stats["resolved"] > 0


def test_probe_batches_sub_tasks_and_keeps_other_labels():
    """`Svm.fit_many` gives what one call per sub-task gives; labels need not be 0 / 1; multi-class goes to libsvm."""
    probe = Svm(min_train=10)
    x, y, xt, _ = newt_like(3, n_train=30, n_test=10, d=8)
    x3 = np.r_[x, x[:15] + 0.1]
    y3 = np.r_[y, np.full(15, 2)]
    problems = [(x, np.where(y == 1, 7, 3), xt), (x[:8], y[:8], xt), (x3, y3, xt), (x, np.zeros_like(y), xt)]
    many = probe.fit_many(problems, seed=1)
    for (a, b, c), out in zip(problems, many):
        one = probe(a, b, c, seed=1)
        assert np.array_equal(one.labels, out.labels) and one.params == out.params
    assert set(many[0].labels) <= {3, 7}
    assert many[1].params == {"svc__kernel": "linear", "svc__C": 1.0} and many[3].params == {"constant": 0}
    ref = reference(x3, y3, 1)
    assert many[2].params == plain(ref.best_params_)
