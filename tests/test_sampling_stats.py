"""Class-balanced seeded sampling and the vectorised bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biobench import stats
from biobench.sampling import balanced_sample, task_rng


def test_balanced_sample_two_classes_matches_newt_split():
    labels = np.array([0] * 30 + [1] * 30)
    idx = balanced_sample(labels, 7, np.random.default_rng(0))
    assert len(idx) == 7 and len(set(idx)) == 7
    assert (labels[idx] == 0).sum() == 3 and (labels[idx] == 1).sum() == 4  # n // 2 to class 0, rest to class 1


def test_balanced_sample_is_seeded():
    labels = np.repeat(np.arange(3), 20)
    a = balanced_sample(labels, 9, np.random.default_rng(4))
    b = balanced_sample(labels, 9, np.random.default_rng(4))
    c = balanced_sample(labels, 9, np.random.default_rng(5))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(labels[a]).tolist() == [3, 3, 3]


def test_balanced_sample_all_keeps_file_order():
    labels = np.array([1, 0, 1, 0, 0])
    assert balanced_sample(labels, -1, np.random.default_rng(0)).tolist() == [0, 1, 2, 3, 4]
    assert balanced_sample(labels, 99, np.random.default_rng(0)).tolist() == [0, 1, 2, 3, 4]


def test_balanced_sample_redistributes_shortfall():
    labels = np.array([0] * 2 + [1] * 20)
    idx = balanced_sample(labels, 10, np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [2, 8]


@given(st.lists(st.integers(0, 3), min_size=1, max_size=60), st.integers(1, 70), st.integers(0, 10))
@settings(max_examples=60, deadline=None)
def test_balanced_sample_properties(label_list, n, seed):
    labels = np.array(label_list)
    idx = balanced_sample(labels, n, np.random.default_rng(seed))
    assert len(idx) == min(n, len(labels)) and len(set(idx.tolist())) == len(idx)
    counts = np.bincount(labels[idx], minlength=4)
    avail = np.bincount(labels, minlength=4)
    # no class is short of its fair share unless it ran out of examples
    fair = min(n, len(labels)) // len(np.unique(labels))
    assert all(counts[c] >= min(fair, avail[c]) for c in np.unique(labels))


def test_task_rng_depends_on_seed_and_name_only():
    assert task_rng(1, "a").integers(1 << 30) == task_rng(1, "a").integers(1 << 30)
    assert task_rng(1, "a").integers(1 << 30) != task_rng(1, "b").integers(1 << 30)
    assert task_rng(1, "a").integers(1 << 30) != task_rng(2, "a").integers(1 << 30)


def slow_bootstrap(scores, n_resamples, seed):
    """The seed's approach: a Python loop over replicates (reference for the vectorised one)."""
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_resamples):
        choice = rng.integers(0, len(scores), size=len(scores))
        reps.append(np.mean([scores[i] for i in choice]))
    return np.array(reps)


def test_bootstrap_matches_slow_reference_exactly_for_the_same_draws():
    scores = np.random.default_rng(0).integers(0, 2, size=300).astype(float)
    fast = stats.bootstrap_replicates(scores, n_resamples=500, seed=11)
    assert np.allclose(fast, slow_bootstrap(scores, 500, 11))


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    scores = np.random.default_rng(1).integers(0, 2, size=1000).astype(float)
    low, high = stats.bootstrap_ci(scores, n_resamples=1000, seed=0)
    assert (low, high) == stats.bootstrap_ci(scores, n_resamples=1000, seed=0)
    assert low < scores.mean() < high
    # normal approximation of the binomial interval, within Monte-Carlo error
    se = np.sqrt(scores.mean() * (1 - scores.mean()) / len(scores))
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_bootstrap_chunks_do_not_change_results(monkeypatch):
    scores = np.random.default_rng(2).random(50)
    whole = stats.bootstrap_replicates(scores, n_resamples=100, seed=3)
    monkeypatch.setattr(stats, "_MAX_CHUNK_ELEMENTS", 50 * 7)
    assert np.array_equal(whole, stats.bootstrap_replicates(scores, n_resamples=100, seed=3))


def test_bootstrap_rejects_empty_and_bad_confidence():
    with pytest.raises(ValueError):
        stats.bootstrap_ci(np.array([]))
    with pytest.raises(ValueError):
        stats.bootstrap_ci(np.ones(3), confidence=95)
