"""Metrics against scikit-learn, the stratified and paired bootstrap against slow loops, and CI properties."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics
from hypothesis import given, settings
from hypothesis import strategies as st

from biobench import stats


def predictions(seed=0, n=300, n_classes=5, acc=0.7):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    p = np.where(rng.random(n) < acc, y, rng.integers(0, n_classes, size=n))
    return y, p


def test_metrics_match_sklearn_on_the_full_set_and_on_materialised_resamples():
    y, p = predictions()
    p[:3] = 7  # a predicted class absent from y_true: not in the label set, but a false positive elsewhere
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(y), size=(4, len(y)))
    labels = np.unique(y)
    cases = [
        (stats.accuracy, lambda a, b: sklearn.metrics.accuracy_score(a, b)),
        (stats.macro_f1, lambda a, b: sklearn.metrics.f1_score(a, b, average="macro", labels=labels, zero_division=0)),
        (
            lambda a, b, i=None: stats.mean_per_class_accuracy(a, b, i),
            lambda a, b: np.mean([np.mean(b[a == c] == c) for c in np.unique(a)]),
        ),
    ]
    for ours, ref in cases:
        assert ours(y, p) == pytest.approx(ref(y, p), abs=1e-12)
        reps = ours(y, p, idx)
        assert reps == pytest.approx([ref(y[r], p[r]) for r in idx], abs=1e-12)
    assert stats.mean_per_class_accuracy(y, p) == pytest.approx(sklearn.metrics.balanced_accuracy_score(y, np.where(p == 7, -1, p)))


def test_multilabel_mean_f1_and_average_precision_match_sklearn():
    rng = np.random.default_rng(2)
    yt = rng.integers(0, 2, size=(120, 9))
    yp = np.where(rng.random((120, 9)) < 0.8, yt, 1 - yt)
    idx = rng.integers(0, 120, size=(3, 120))
    ref = lambda a, b: sklearn.metrics.f1_score(a, b, average="macro", zero_division=0)  # noqa: E731
    assert stats.multilabel_mean_f1(yt, yp) == pytest.approx(ref(yt, yp))
    assert stats.multilabel_mean_f1(yt, yp, idx) == pytest.approx([ref(yt[r], yp[r]) for r in idx])

    labels = rng.integers(0, 2, size=200)
    scores = np.round(labels * 0.5 + rng.random(200), 1)  # rounding makes ties, handled as sklearn does
    idx = rng.integers(0, 200, size=(3, 200))
    assert stats.average_precision(labels, scores) == pytest.approx(sklearn.metrics.average_precision_score(labels, scores))
    assert stats.average_precision(labels, scores, idx) == pytest.approx(
        [sklearn.metrics.average_precision_score(labels[r], scores[r]) for r in idx]
    )


def test_recall_at_k():
    ranks = np.array([0, 1, 5, 0, 2])
    assert stats.recall_at_k(ranks, 1) == pytest.approx(0.4)
    assert stats.recall_at_k(ranks, 3) == pytest.approx(0.8)
    assert stats.recall_at_k(ranks, 3, np.array([[0, 0, 2, 2, 2]])) == pytest.approx([0.4])


def test_stratified_resampling_keeps_every_class_count():
    y = np.array([0] * 5 + [1] * 2 + [2] * 40 + [3])
    for idx in stats.resample_indices(len(y), n_resamples=50, seed=0, strata=y):
        for row in idx:
            assert np.bincount(y[row], minlength=4).tolist() == [5, 2, 40, 1]
    a = np.concatenate(list(stats.resample_indices(len(y), n_resamples=20, seed=3, strata=y)))
    b = np.concatenate(list(stats.resample_indices(len(y), n_resamples=20, seed=3, strata=y)))
    assert np.array_equal(a, b) and len(np.unique(a[:, 0])) > 1


def test_chunking_does_not_change_stratified_replicates(monkeypatch):
    y, p = predictions(n=60)
    whole = stats.replicates(lambda i: stats.macro_f1(y, p, i), len(y), n_resamples=40, seed=1, strata=y)
    monkeypatch.setattr(stats, "_MAX_CHUNK_ELEMENTS", 60 * 7)
    assert np.array_equal(whole, stats.replicates(lambda i: stats.macro_f1(y, p, i), len(y), n_resamples=40, seed=1, strata=y))


def slow_stratified_macro_f1_replicates(y, p, n_resamples, seed):
    """Reference: a Python loop per replicate and per class, scikit-learn's f1_score on each resample."""
    rng = np.random.default_rng(seed + 1000)  # independent draws: agreement is within Monte-Carlo error only
    labels = np.unique(y)
    out = []
    for _ in range(n_resamples):
        rows = np.concatenate([rng.choice(np.flatnonzero(y == c), size=(y == c).sum(), replace=True) for c in labels])
        out.append(sklearn.metrics.f1_score(y[rows], p[rows], average="macro", labels=labels, zero_division=0))
    return np.array(out)


def test_stratified_macro_f1_percentiles_match_a_slow_reference():
    y, p = predictions(seed=4, n=400, n_classes=6)
    fast = stats.replicates(lambda i: stats.macro_f1(y, p, i), len(y), n_resamples=2000, seed=0, strata=y)
    slow = slow_stratified_macro_f1_replicates(y, p, 600, seed=0)
    sd = fast.std()
    for q in (0.025, 0.5, 0.975):
        # Monte-Carlo error of a tail quantile from 600 draws is about 0.15 sd; allow 0.35 sd.
        assert abs(np.quantile(fast, q) - np.quantile(slow, q)) < 0.35 * sd
    assert slow.std() == pytest.approx(sd, rel=0.15)


@pytest.mark.parametrize("n_values", [2, 5, 100])
def test_mean_ci_counts_path_matches_index_resampling_within_monte_carlo_error(n_values):
    scores = np.random.default_rng(8).integers(0, n_values, size=500) / max(1, n_values - 1)
    fast = stats.mean_ci(scores, n_resamples=4000, seed=0)
    slow = stats.bootstrap_ci(scores, n_resamples=4000, seed=1)  # index resampling, independent draws
    width = slow[1] - slow[0]
    assert fast.estimate == pytest.approx(scores.mean())
    assert abs(fast.low - slow[0]) < 0.06 * width and abs(fast.high - slow[1]) < 0.06 * width


def test_metric_ci_brackets_the_estimate_and_is_seeded():
    y, p = predictions(seed=5, n=500)
    f = lambda i: stats.macro_f1(y, p, i)  # noqa: E731
    a = stats.metric_ci(f, len(y), strata=y, n_resamples=300, seed=2)
    assert a == stats.metric_ci(f, len(y), strata=y, n_resamples=300, seed=2)
    assert a.low < a.estimate < a.high and a.estimate == pytest.approx(f(None))


def test_paired_bootstrap_identical_models_and_a_clear_difference():
    y, p = predictions(seed=6, n=400, acc=0.6)
    same = stats.paired_bootstrap(lambda i: stats.accuracy(y, p, i), lambda i: stats.accuracy(y, p, i), len(y), n_resamples=200)
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    better = np.where(np.random.default_rng(0).random(len(y)) < 0.5, y, p)
    cmp = stats.paired_bootstrap(lambda i: stats.accuracy(y, better, i), lambda i: stats.accuracy(y, p, i), len(y), n_resamples=500)
    assert cmp.difference > 0 and cmp.low > 0 and cmp.p_value < 0.01
    # Pairing: the interval of the difference equals the percentile interval of per-replicate differences.
    reps = [stats.accuracy(y, better, i) - stats.accuracy(y, p, i) for i in stats.resample_indices(len(y), n_resamples=500, seed=0)]
    assert (cmp.low, cmp.high) == pytest.approx(tuple(np.quantile(np.concatenate(reps), [0.025, 0.975])))


def test_paired_p_value_is_roughly_uniform_under_the_null():
    # Two models equally good, predictions independent: p < 0.05 in about 5% of test sets.
    rng = np.random.default_rng(7)
    p_values = []
    for _ in range(60):
        y = rng.integers(0, 2, size=200)
        a = np.where(rng.random(200) < 0.7, y, 1 - y)
        b = np.where(rng.random(200) < 0.7, y, 1 - y)
        p_values.append(
            stats.paired_bootstrap(
                lambda i: stats.accuracy(y, a, i), lambda i: stats.accuracy(y, b, i), 200, n_resamples=300, seed=1
            ).p_value
        )
    assert 0.0 <= np.mean(np.array(p_values) < 0.05) <= 0.17
    assert 0.35 < np.median(p_values) < 0.65


def test_holm_hand_computed():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert stats.holm(np.array([0.01, 0.04, 0.03, 0.005])) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm(np.array([0.5, 0.9])) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError):
        stats.holm(np.array([1.2]))


# Every metric, as (name, f(data, idx), data generator, strata) for the property tests.
def _metric_cases(y, p, s, yt, yp):
    return {
        "accuracy": (lambda i: stats.accuracy(y, p, i), len(y), None),
        "accuracy (counts)": ((y == p).astype(float), len(y), "mean_ci"),
        "mean_per_class_accuracy": (lambda i: stats.mean_per_class_accuracy(y, p, i), len(y), y),
        "macro_f1": (lambda i: stats.macro_f1(y, p, i), len(y), y),
        "multilabel_mean_f1": (lambda i: stats.multilabel_mean_f1(yt, yp, i), len(yt), None),
        "recall_at_k": (lambda i: stats.recall_at_k(p, 2, i), len(p), None),
        "average_precision": (lambda i: stats.average_precision(y % 2, s, i), len(y), None),
    }


@st.composite
def prediction_sets(draw):
    n = draw(st.integers(1, 40))
    k = draw(st.integers(1, 4))
    y = np.array(draw(st.lists(st.integers(0, k), min_size=n, max_size=n)))
    p = np.array(draw(st.lists(st.integers(0, k), min_size=n, max_size=n)))
    s = np.array(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)), dtype=float)
    yt = np.array(draw(st.lists(st.integers(0, 1), min_size=2 * n, max_size=2 * n))).reshape(n, 2)
    yp = np.array(draw(st.lists(st.integers(0, 1), min_size=2 * n, max_size=2 * n))).reshape(n, 2)
    return y, p, s, yt, yp, draw(st.integers(0, 100))


@given(prediction_sets())
@settings(max_examples=25, deadline=None)
def test_every_metric_lies_in_its_ci_and_duplicating_never_widens_it(data):
    """Duplicating every prediction halves the bootstrap variance, so the interval must not widen.

    Exactly "never" cannot hold for percentile intervals of discrete statistics on tiny sets:
    if P(X = 0) = 0.02 and P(X = 1) = 0.98, the 2.5% quantile of X is 1 but that of the mean
    of two copies is 0.5. Hypothesis finds such 5-example cases, so we allow one step of
    the statistic's resolution (1 / (2n)) and no more.
    """
    y, p, s, yt, yp, seed = data
    once = _metric_cases(y, p, s, yt, yp)
    twice = _metric_cases(*(np.concatenate([a, a]) for a in (y, p, s, yt, yp)))

    def ci_of(f, n, strata):
        if isinstance(strata, str):  # the O(B) path for a mean of 0/1 scores
            return stats.mean_ci(f, n_resamples=200, seed=seed)
        return stats.metric_ci(f, n, strata=strata, n_resamples=200, seed=seed)

    for name, (f, n, strata) in once.items():
        ci = ci_of(f, n, strata)
        assert ci.low <= ci.estimate <= ci.high, name
        f2, n2, strata2 = twice[name]
        ci2 = ci_of(f2, n2, strata2)
        assert ci2.estimate == pytest.approx(ci.estimate), name
        assert ci2.high - ci2.low <= ci.high - ci.low + 1 / (2 * n) + 1e-9, name
