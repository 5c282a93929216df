"""Cost-sensitive errors (`biobench.costs`), extra metrics as sub-scores, the linear and open-set probes."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.covariance
import sklearn.discriminant_analysis

from biobench import costs, metrics, stats
from biobench.probes import Linear, OpenSet, SimpleShot, linear, openset


def test_open_set_costs_by_hand():
    y_true = np.array([3, 3, -1, -1, 4, 5])
    y_pred = np.array([3, 4, -1, 2, -1, 5])
    # right, known->other known (1), unknown right, unknown->known (10), known->unknown (0.1), right
    assert costs.open_set_costs(y_true, y_pred).tolist() == [0, 1, 0, 1, 1, 0]
    got = costs.open_set_costs(y_true, y_pred, unknown_as_known=10, known_as_unknown=0.1)
    assert got.tolist() == pytest.approx([0, 1, 0, 10, 0.1, 0])


def test_critical_costs_by_hand():
    y_true = np.array([1, 2, 3, 4, -1, 1])
    y_pred = np.array([2, 3, 4, 1, 3, -1])
    # critical {1, 3}: 1->2 missed, 2->3 false alarm, 3->4 missed, 4->1 false alarm, unknown->3 false alarm, 1->unknown missed
    assert costs.critical_costs(y_true, y_pred, {1, 3}).tolist() == [100, 1, 100, 1, 1, 100]
    assert costs.critical_costs(y_true, y_pred, {1, 3}, missed=5, false_alarm=2).tolist() == [5, 2, 5, 2, 2, 5]


def test_normalized_score_normalises_each_replicate_by_its_own_worst_case():
    c, w = np.array([0.0, 2.0, 1.0]), np.array([2.0, 4.0, 2.0])
    assert costs.normalized_score(c, w) == pytest.approx(1 - 3 / 8)
    idx = np.array([[0, 0, 0], [1, 1, 2]])
    assert costs.normalized_score(c, w, idx).tolist() == pytest.approx([1.0, 1 - 5 / 10])


def test_extra_metrics_are_stored_as_sub_scores_of_the_headline_rows():
    m = metrics.Metric("accuracy", extra=(("errors", lambda t, p: float((t != p).sum())),))
    y, p = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 1])
    s = metrics.summarize(m, y, p, headline=np.array([True, True, True, False]), n_bootstrap=50)
    assert s.sub_scores["metrics"] == {"errors": 1.0}
    assert "metrics" not in metrics.summarize(metrics.ACCURACY, y, p, n_bootstrap=50).sub_scores


def test_cosine_schedule_starts_at_lr_and_ends_at_final():
    assert linear.cosine_lr(0, 100, 1.0, 0.01) == pytest.approx(1.0)
    assert linear.cosine_lr(50, 100, 1.0, 0.01) == pytest.approx(0.505)
    assert linear.cosine_lr(100, 100, 1.0, 0.01) == pytest.approx(0.01)


def test_linear_probe_learns_separable_classes_and_is_seeded():
    rng = np.random.default_rng(0)
    y = np.repeat([3, 7, 9], 20)
    x = rng.normal(size=(60, 8)) + 3 * np.eye(8)[[0, 1, 2]][np.searchsorted([3, 7, 9], y)]
    probe = Linear(steps=300, lr=1e-2)
    a, b = probe(x, y, x, seed=1), probe(x, y, x, seed=1)
    assert (a.labels == y).mean() > 0.9 and np.array_equal(a.labels, b.labels) and np.allclose(a.scores, b.scores)
    assert a.scores.shape == (60, 3) and np.allclose(a.scores.sum(1), 1)


def test_shared_covariance_matches_ledoit_wolf_on_standardised_pooled_scatter():
    rng = np.random.default_rng(0)
    codes = np.repeat([0, 1, 2], 30)
    x = rng.normal(size=(90, 5)) * [1, 2, 3, 4, 5] + 4 * codes[:, None]
    means, cov = openset.shared_covariance(x, codes)
    centred = x - means[codes]
    scale = centred.std(0)
    lw = sklearn.covariance.ledoit_wolf(centred / scale, assume_centered=True)[0]
    assert np.allclose(cov, scale[:, None] * lw * scale[None, :])
    assert np.allclose(means, [x[codes == k].mean(0) for k in range(3)])


def test_min_distance_is_the_mahalanobis_distance_to_the_nearest_mean():
    rng = np.random.default_rng(1)
    codes = np.repeat([0, 1], 40)
    x = rng.normal(size=(80, 4)) + 5 * codes[:, None]
    det = openset.fit(x, codes, quantile=0.9)
    means, cov = openset.shared_covariance(x - x.mean(0), codes)
    inv = np.linalg.inv(cov)
    q = rng.normal(size=(6, 4)) * 3
    diff = (q - x.mean(0))[:, None, :] - means[None]
    want = np.einsum("nkd,de,nke->nk", diff, inv, diff).min(1)
    assert np.allclose(openset.min_distance(det, q), want)
    assert det.threshold == pytest.approx(np.quantile(openset.min_distance(det, x), 0.9))


def test_open_set_probe_rejects_far_rows_and_keeps_the_base_labels_elsewhere():
    rng = np.random.default_rng(2)
    y = np.repeat([10, 20, 30], 40)
    centres = {10: [0, 0, 0], 20: [6, 0, 0], 30: [0, 6, 0]}
    x = rng.normal(size=(120, 3)) + np.array([centres[c] for c in y])
    far = rng.normal(size=(5, 3)) + [0, 0, 40]
    near = rng.normal(size=(5, 3)) * 0.1  # at class 10's centre
    out = OpenSet(base=SimpleShot(), quantile=0.95)(x, y, np.r_[near, far], seed=0)
    assert out.labels[5:].tolist() == [-1] * 5
    assert out.labels[:5].tolist() == SimpleShot()(x, y, near, seed=0).labels.tolist() == [10] * 5
    assert out.params["rejected"] == 5 and (out.scores[5:] > out.params["threshold"]).all()


def test_lda_covariance_is_close_when_classes_share_their_spread():
    """scikit-learn's LDA (the original's detector) shrinks each class's scatter; ours the pooled one: near-equal here."""
    rng = np.random.default_rng(3)
    codes = np.repeat([0, 1, 2], 400)
    x = rng.normal(size=(1200, 4)) @ rng.normal(size=(4, 4)) + 3 * codes[:, None]
    lda = sklearn.discriminant_analysis.LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto", store_covariance=True).fit(x, codes)
    _, cov = openset.shared_covariance(x, codes)
    assert np.allclose(cov, lda.covariance_, rtol=0.05, atol=0.02)
    assert stats.macro_f1(codes, codes) == 1.0


def test_one_example_per_class_falls_back_to_euclidean_distances():
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    means, cov = openset.shared_covariance(x, np.array([0, 1]))
    assert np.array_equal(cov, np.eye(2)) and np.array_equal(means, x)
    out = OpenSet()(x, np.array([5, 6]), np.array([[0.0, 0.0], [3.0, 5.0]]), seed=0)
    assert np.isfinite(out.scores).all() and out.scores.tolist() == pytest.approx([0.0, 1.0])
    assert out.labels.tolist() == [5, -1]  # the threshold is 0: only an exact training point is known
