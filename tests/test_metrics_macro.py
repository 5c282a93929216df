"""The macro metrics as tasks use them (Pl@ntNet, iWildCam): label set, class-stratified intervals, scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics

from biobench import metrics, stats


def long_tail(seed=0):
    """Test labels of 4 classes (one with 2 examples), predictions that also name classes 7 and 9, absent from the test set."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2, 3], [60, 25, 10, 2])
    p = np.where(rng.random(len(y)) < 0.6, y, rng.choice([0, 1, 2, 3, 7, 9], size=len(y)))
    return y, p


@pytest.mark.parametrize("metric", [metrics.MEAN_PER_CLASS_ACCURACY, metrics.MACRO_F1])
def test_macro_metric_intervals_resample_within_class(metric, monkeypatch):
    y, p = long_tail()
    seen = []
    real = stats.resample_indices

    def spy(n, **kwargs):
        for idx in real(n, **kwargs):
            seen.append((idx, kwargs.get("strata")))
            yield idx

    monkeypatch.setattr(stats, "resample_indices", spy)
    summary = metrics.summarize(metric, y, p, n_bootstrap=200, seed=0)
    assert metric.resample == "stratified"
    assert seen and all(strata is not None and np.array_equal(strata, y) for _, strata in seen)
    for idx, _ in seen:  # every replicate keeps every class, the 2-example one included, at its test-set count
        counts = np.stack([np.bincount(y[row], minlength=4) for row in idx])
        assert (counts == [60, 25, 10, 2]).all()
    assert summary.ci_low <= summary.score <= summary.ci_high < 1


def test_macro_f1_averages_over_the_classes_present_in_the_test_set():
    y, p = long_tail(1)
    present = np.unique(y)
    expected = sklearn.metrics.f1_score(y, p, average="macro", labels=present, zero_division=0)
    default = sklearn.metrics.f1_score(y, p, average="macro", zero_division=0)  # also averages in the predicted-only 7 and 9
    assert expected != pytest.approx(default)
    assert metrics.summarize(metrics.MACRO_F1, y, p, n_bootstrap=50).score == pytest.approx(expected, abs=1e-12)
    # A sub-score (one location) averages over the classes present in ITS rows.
    rows = np.flatnonzero(y != 2)
    sub = metrics.summarize(metrics.MACRO_F1, y, p, levels={"location": np.where(y == 2, "a", "b").tolist()}, n_bootstrap=50)
    ref_b = sklearn.metrics.f1_score(y[rows], p[rows], average="macro", labels=np.unique(y[rows]), zero_division=0)
    assert sub.sub_scores["location"]["b"]["macro_f1"] == pytest.approx(ref_b, abs=1e-12)


def test_mean_per_class_accuracy_is_balanced_accuracy_over_test_classes():
    y, p = long_tail(2)
    expected = np.mean([np.mean(p[y == c] == c) for c in np.unique(y)])
    assert metrics.summarize(metrics.MEAN_PER_CLASS_ACCURACY, y, p, n_bootstrap=50).score == pytest.approx(expected, abs=1e-12)
