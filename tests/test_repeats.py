"""Few-shot repeats (shared layer): k-per-class draws, the crossed (pigeonhole) bootstrap, the route's repeat loop."""

from __future__ import annotations

import numpy as np
import pytest

from biobench import metrics, stats
from biobench.download import manual_steps
from biobench.errors import DataError
from biobench.sampling import Repeats, k_per_class, repeat_rows


def test_k_per_class_takes_k_of_each_class_or_all_it_has():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 1 + [3] * 9)
    for k in (1, 2, 3):
        idx = k_per_class(labels, k, np.random.default_rng(k))
        assert len(set(idx)) == len(idx)
        assert np.bincount(labels[idx], minlength=4).tolist() == [min(k, c) for c in (5, 2, 1, 9)]


def test_k_per_class_is_uniform_within_a_class():
    labels = np.array([0] * 4 + [1] * 3)
    rng = np.random.default_rng(0)
    hits = np.bincount(np.concatenate([k_per_class(labels, 1, rng) for _ in range(4000)]), minlength=7)
    assert hits[:4] / 4000 == pytest.approx([0.25] * 4, abs=0.03) and hits[4:] / 4000 == pytest.approx([1 / 3] * 3, abs=0.03)


def test_repeat_rows_are_seeded_per_draw_and_differ_between_draws():
    labels = np.repeat(np.arange(6), 10)
    rows = np.arange(100, 160)  # rows of the sub-task in a bigger table
    a = repeat_rows(np.r_[np.zeros(100, dtype=int), labels], rows, Repeats(5, 2), seed=3, name="t")
    b = repeat_rows(np.r_[np.zeros(100, dtype=int), labels], rows, Repeats(8, 2), seed=3, name="t")
    c = repeat_rows(np.r_[np.zeros(100, dtype=int), labels], rows, Repeats(5, 2), seed=4, name="t")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # more draws never change the first ones
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert len({tuple(sorted(x)) for x in a}) == 5
    assert all(set(x) <= set(rows) and np.bincount(labels[x - 100]).tolist() == [2] * 6 for x in a)
    with pytest.raises(ValueError, match="shots >= 1"):
        Repeats(3, 0)


def _anova(s: np.ndarray) -> tuple[float, float, float]:
    """Plug-in variances of repeat effects, unit effects and interaction of a balanced R x G table."""
    mu = s.mean()
    a, b = s.mean(1) - mu, s.mean(0) - mu
    e = s - mu - a[:, None] - b[None, :]
    return float((a**2).mean()), float((b**2).mean()), float((e**2).mean())


@pytest.mark.parametrize("binary", [False, True])
def test_crossed_bootstrap_variance_matches_the_closed_form(binary):
    rng = np.random.default_rng(1)
    r, g = 7, 30
    s = rng.normal(size=(r, 1)) + rng.normal(size=(1, g)) + rng.normal(size=(r, g))
    s = (s > 0).astype(float) if binary else s
    rows, units = np.repeat(np.arange(r), g), np.tile(np.arange(g), r)
    order = rng.permutation(r * g)  # the rows' order must not matter
    reps = stats.crossed_replicates(s.ravel()[order], rows[order], units[order], n_resamples=40_000, seed=0)
    va, vb, ve = _anova(s)
    assert reps.mean() == pytest.approx(s.mean(), abs=0.01)
    assert reps.var() == pytest.approx(va / r + vb / g + ve / (r * g), rel=0.04)


def test_crossed_interval_is_wider_than_one_repeats_when_repeats_disagree():
    rng = np.random.default_rng(2)
    r, g = 20, 200
    acc = np.linspace(0.1, 0.9, r)  # training draws that matter: each repeat right on its own share of examples
    s = (rng.random(g)[None, :] < acc[:, None]).astype(float)
    rows, units = np.repeat(np.arange(r), g), np.tile(np.arange(g), r)
    crossed = stats.crossed_mean_ci(s.ravel(), rows, units, n_resamples=2000, seed=0)
    single = stats.mean_ci(s[r // 2], n_resamples=2000, seed=0)  # the middle repeat, accuracy ~0.5: the widest single one
    assert crossed.high - crossed.low > 1.3 * (single.high - single.low)
    assert crossed.low <= crossed.estimate <= crossed.high and crossed.estimate == pytest.approx(s.mean())
    # Repeats that agree: the same width as one repeat (up to Monte-Carlo error).
    same = np.tile(s[r // 2], r)
    agree = stats.crossed_mean_ci(same, rows, units, n_resamples=2000, seed=0)
    assert agree.high - agree.low == pytest.approx(single.high - single.low, rel=0.15)


def test_one_repeat_is_the_bootstrap_of_units_and_a_missing_cell_is_refused():
    scores = np.random.default_rng(3).random(300)
    one = stats.crossed_replicates(scores, np.zeros(300), np.arange(300), n_resamples=3000, seed=0)
    plain = stats.bootstrap_replicates(scores, n_resamples=3000, seed=1)
    assert one.std() == pytest.approx(plain.std(), rel=0.08)
    groups = np.arange(300) // 10  # clustered units: one repeat resamples whole clusters
    clustered = stats.crossed_replicates(scores, np.zeros(300), groups, n_resamples=3000, seed=0)
    assert clustered.std() == pytest.approx(np.std(scores.reshape(30, 10).mean(1)) / np.sqrt(30), rel=0.1)
    with pytest.raises(ValueError, match="every repeat to score every test unit"):
        stats.crossed_mean_ci(np.ones(3), np.array([0, 0, 1]), np.array([0, 1, 0]))


def test_summarize_uses_the_crossed_interval_for_repeats_and_refuses_non_mean_metrics():
    rng = np.random.default_rng(4)
    y = np.tile(rng.integers(0, 3, size=40), 5)
    p = np.where(rng.random(200) < 0.6, y, (y + 1) % 3)
    repeat, unit = np.repeat(np.arange(5), 40), np.tile(np.arange(40), 5)
    got = metrics.summarize(metrics.ACCURACY, y, p, repeats=(repeat, unit), n_bootstrap=300, seed=2)
    want = stats.crossed_mean_ci((y == p).astype(float), repeat, unit, n_resamples=300, seed=2)
    assert (got.score, got.ci_low, got.ci_high) == pytest.approx((want.estimate, want.low, want.high))
    groups = unit // 4
    got = metrics.summarize(metrics.CLUSTERED_ACCURACY, y, p, groups=groups, repeats=(repeat, unit), n_bootstrap=300, seed=2)
    want = stats.crossed_mean_ci((y == p).astype(float), repeat, groups, n_resamples=300, seed=2)
    assert (got.ci_low, got.ci_high) == pytest.approx((want.low, want.high))
    with pytest.raises(ValueError, match="crossed bootstrap over repeats is for means"):
        metrics.summarize(metrics.MACRO_F1, y, p, repeats=(repeat, unit))


def test_manual_steps_number_the_steps_and_show_the_layout(tmp_path):
    err = manual_steps("t", tmp_path, "it needs a login", ["log in", "fetch into {dir}"], "  {dir}/train/")
    assert isinstance(err, DataError)
    assert (
        str(err)
        == f"t: it needs a login. Get it by hand:\n  1. log in\n  2. fetch into {tmp_path}\nThen {tmp_path} should hold:\n  {tmp_path}/train/"
    )
