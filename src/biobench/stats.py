"""Metrics and bootstrap confidence intervals, vectorised.

A bootstrap replicate resamples the test examples with replacement once; B replicates
are drawn as a (B, n) index array (in memory-bounded chunks) and the metric is computed
for all of them at once. No Python loop runs per example or per replicate.

Macro metrics (macro-F1, mean per-class accuracy) fix their label set from the full test
set and are resampled within class (`strata=y_true`), so no class vanishes from a
replicate; the reported interval always contains its point estimate. Two models on the
same examples are compared with a paired bootstrap (same indices for both), and a family
of comparisons with Holm's step-down correction. References: Efron & Tibshirani, "An
Introduction to the Bootstrap" (1993); Holm, "A simple sequentially rejective multiple
test procedure", Scand. J. Statist. 6 (1979).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
from jaxtyping import Float, Int

DEFAULT_RESAMPLES = 1000
_MAX_CHUNK_ELEMENTS = 8_000_000  # indices per chunk: ~64 MB of int64


def mean_score(scores: Float[np.ndarray, " n"], idx: Int[np.ndarray, "b n"] | None = None) -> float | Float[np.ndarray, " b"]:
    """Mean per-example score (accuracy when scores are 0/1); with `idx`, one mean per row of indices."""
    scores = np.asarray(scores, dtype=np.float64)
    if idx is None:
        return float(scores.mean())
    return scores[idx].mean(axis=1)


def bootstrap_replicates(
    scores: Float[np.ndarray, " n"],
    metric=mean_score,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Float[np.ndarray, " b"]:
    """`metric(scores, idx)` on `n_resamples` seeded resamples of the examples (see `replicates`)."""
    return replicates(lambda idx: metric(scores, idx), len(scores), n_resamples=n_resamples, seed=seed)


def bootstrap_ci(
    scores: Float[np.ndarray, " n"],
    metric=mean_score,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric(scores, idx)` over examples (see `metric_ci`)."""
    ci = metric_ci(lambda idx: metric(scores, idx), len(scores), n_resamples=n_resamples, seed=seed, confidence=confidence)
    return ci.low, ci.high


###########################
# Metrics over predictions #
###########################
# Each metric takes the predictions of a test set and an optional (b, n) index array. Without
# `idx` it returns the point estimate (a float); with `idx` one value per row, where row r is
# the multiset of examples idx[r] (a bootstrap replicate). Counting is done with one
# `np.bincount` per chunk over "replicate * n_classes + class" keys, so no Python loop runs per
# example or per replicate, and memory is O(b * n) for the indices plus O(b * n_classes).


def _rows(n: int, idx: Int[np.ndarray, "b n"] | None) -> Int[np.ndarray, "b n"]:
    return np.arange(n)[None, :] if idx is None else np.asarray(idx)


def _finish(values: np.ndarray, idx) -> float | np.ndarray:
    return float(values[0]) if idx is None else values


def _label_set(y_true: np.ndarray, labels) -> np.ndarray:
    return np.unique(y_true) if labels is None else np.asarray(labels)


def _per_class_counts(
    y_true: Int[np.ndarray, " n"], y_pred: Int[np.ndarray, " n"], labels: np.ndarray, idx
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, predicted count, true count) per replicate and label: three (b, C) arrays."""
    n_labels = len(labels)
    # Map every label to its position in `labels`; labels outside the set go to a spill slot.
    t = np.searchsorted(labels, y_true)
    t = np.where((t < n_labels) & (labels[np.minimum(t, n_labels - 1)] == y_true), t, n_labels)
    p = np.searchsorted(labels, y_pred)
    p = np.where((p < n_labels) & (labels[np.minimum(p, n_labels - 1)] == y_pred), p, n_labels)
    rows = _rows(len(y_true), idx)
    b = rows.shape[0]
    width = n_labels + 1
    offset = (np.arange(b) * width)[:, None]
    tr, pr = t[rows], p[rows]
    size = b * width
    true_count = np.bincount((offset + tr).ravel(), minlength=size).reshape(b, width)[:, :n_labels]
    pred_count = np.bincount((offset + pr).ravel(), minlength=size).reshape(b, width)[:, :n_labels]
    hit = (tr == pr) & (tr < n_labels)
    tp = np.bincount((offset + tr)[hit], minlength=size).reshape(b, width)[:, :n_labels]
    return tp.astype(np.float64), pred_count.astype(np.float64), true_count.astype(np.float64)


def accuracy(
    y_true: Int[np.ndarray, " n"], y_pred: Int[np.ndarray, " n"], idx: Int[np.ndarray, "b n"] | None = None
) -> float | Float[np.ndarray, " b"]:
    """Fraction of exact matches."""
    return mean_score(np.asarray(y_true) == np.asarray(y_pred), idx)


def mean_per_class_accuracy(
    y_true: Int[np.ndarray, " n"],
    y_pred: Int[np.ndarray, " n"],
    idx: Int[np.ndarray, "b n"] | None = None,
    *,
    labels: Int[np.ndarray, " c"] | None = None,
) -> float | Float[np.ndarray, " b"]:
    """Mean over the classes of `y_true` (or `labels`) of per-class recall (Pl@ntNet's metric).

    A class with no example in a replicate is left out of that replicate's mean; with
    class-stratified resampling (`strata=y_true`) that never happens.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = _label_set(y_true, labels)
    tp, _, true_count = _per_class_counts(y_true, y_pred, labels, idx)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / true_count
    present = true_count > 0
    values = np.where(present, recall, 0.0).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return _finish(values, idx)


def macro_f1(
    y_true: Int[np.ndarray, " n"],
    y_pred: Int[np.ndarray, " n"],
    idx: Int[np.ndarray, "b n"] | None = None,
    *,
    labels: Int[np.ndarray, " c"] | None = None,
) -> float | Float[np.ndarray, " b"]:
    """Unweighted mean of per-class F1 over a FIXED label set (default: the classes of `y_true`).

    Equals `sklearn.metrics.f1_score(y_true, y_pred, average="macro", labels=labels)` (an F1
    with no true and no predicted example counts 0, sklearn's `zero_division=0`). Fixing the
    label set from the full test set keeps a replicate's average over the same classes.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = _label_set(y_true, labels)
    tp, pred_count, true_count = _per_class_counts(y_true, y_pred, labels, idx)
    denom = pred_count + true_count
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return _finish(f1.mean(axis=1), idx)


def multilabel_mean_f1(
    y_true: Int[np.ndarray, "n k"], y_pred: Int[np.ndarray, "n k"], idx: Int[np.ndarray, "b n"] | None = None
) -> float | Float[np.ndarray, " b"]:
    """Mean over the k binary traits of the positive class's F1 (sklearn's multi-label `average="macro"`).

    FishNet's metric. An example is one image with all its traits, so a replicate resamples images.
    """
    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    rows = _rows(len(y_true), idx)
    # Per replicate and trait: counts are sums over the resampled rows; chunk over traits keeps memory at O(b n).
    k = y_true.shape[1]
    f1 = np.empty((rows.shape[0], k))
    for j in range(k):  # k is the number of traits (9 for FishNet), not examples
        t, p = y_true[:, j], y_pred[:, j]
        tp = (t & p)[rows].sum(axis=1)
        denom = t[rows].sum(axis=1) + p[rows].sum(axis=1)
        f1[:, j] = np.divide(2 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)
    return _finish(f1.mean(axis=1), idx)


def recall_at_k(ranks: Int[np.ndarray, " n"], k: int, idx: Int[np.ndarray, "b n"] | None = None) -> float | Float[np.ndarray, " b"]:
    """Fraction of queries whose first correct item has 0-based rank < k (retrieval R@k, re-id top-k)."""
    return mean_score(np.asarray(ranks) < k, idx)


def average_precision(
    y_true: Int[np.ndarray, " n"], scores: Float[np.ndarray, " n"], idx: Int[np.ndarray, "b n"] | None = None
) -> float | Float[np.ndarray, " b"]:
    """Average precision of ranking by `scores` (higher = positive), as `sklearn.metrics.average_precision_score`.

    Tied scores form one threshold, as in scikit-learn. A replicate weights every example by
    how often it was drawn; a replicate with no positive gets AP 0.
    """
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    s_sorted = scores[order]
    pos_sorted = y_true[order]
    # The last position of each run of tied scores: precision/recall are read only there.
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    rows = _rows(n, idx)
    b = rows.shape[0]
    # How often each example was drawn, in score order.
    counts = np.bincount((rows + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n).reshape(b, n)[:, order]
    tp = np.cumsum(counts * pos_sorted, axis=1)
    seen = np.cumsum(counts, axis=1)
    tp, seen = tp[:, last_of_tie], seen[:, last_of_tie]
    total_pos = tp[:, -1:]
    precision = np.divide(tp, seen, out=np.zeros_like(tp, dtype=np.float64), where=seen > 0)
    recall = np.divide(tp, total_pos, out=np.zeros_like(tp, dtype=np.float64), where=total_pos > 0)
    delta = np.diff(np.concatenate([np.zeros((b, 1)), recall], axis=1), axis=1)
    return _finish((delta * precision).sum(axis=1), idx)


#########################
# Bootstrap of a metric #
#########################


def resample_indices(
    n: int,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> Iterator[Int[np.ndarray, "b n"]]:
    """Seeded bootstrap index arrays, yielded in memory-bounded (b, n) chunks, n_resamples rows in all.

    Without `strata`, every row draws n examples with replacement. With `strata` (e.g. the
    true labels), every row draws, within each stratum, as many examples as it holds, so no
    class vanishes from a replicate and the class counts stay those of the test set (a
    stratified bootstrap: the test set's class sizes were fixed by its design, not drawn).
    """
    if n == 0:
        raise ValueError("Cannot bootstrap an empty set of predictions.")
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // n)
    if strata is not None:
        strata = np.asarray(strata)
        if strata.shape[0] != n:
            raise ValueError(f"strata has {strata.shape[0]} entries for {n} examples.")
        order = np.argsort(strata, kind="stable")
        _, first, sizes = np.unique(strata[order], return_index=True, return_counts=True)
        start = np.repeat(first, sizes)  # for every sorted position, where its stratum starts
        size = np.repeat(sizes, sizes)
    for lo in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - lo)
        if strata is None:
            yield rng.integers(0, n, size=(b, n))
        else:
            offset = np.minimum((rng.random((b, n)) * size).astype(np.int64), size - 1)
            yield order[start + offset]


def replicates(
    metric: Callable[[np.ndarray | None], float | np.ndarray],
    n: int,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> Float[np.ndarray, " b"]:
    """`metric(idx)` on `n_resamples` seeded resamples of n examples; `metric(None)` is the point estimate."""
    return np.concatenate(
        [np.asarray(metric(idx), dtype=np.float64) for idx in resample_indices(n, n_resamples=n_resamples, seed=seed, strata=strata)]
    )


def percentile_interval(reps: Float[np.ndarray, " b"], estimate: float, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the replicates, widened if needed to contain `estimate`.

    A percentile interval of a biased statistic (F1 and AP on few examples) can miss its own
    point estimate; we never report such an interval. The widening is rare (see
    benchmarks/coverage.py) and only ever moves an end to the estimate.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(reps, [alpha, 1 - alpha])
    return float(min(low, estimate)), float(max(high, estimate))


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval."""

    estimate: float
    """The metric on the full test set."""
    low: float
    """Lower end of the interval."""
    high: float
    """Upper end of the interval."""
    confidence: float
    """Nominal coverage, e.g. 0.95."""
    n_resamples: int
    """Bootstrap replicates used."""


def metric_ci(
    metric: Callable[[np.ndarray | None], float | np.ndarray],
    n: int,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    strata: np.ndarray | None = None,
    confidence: float = 0.95,
) -> Interval:
    """Point estimate and percentile bootstrap interval of `metric`, a function of an index array.

    Example: `metric_ci(lambda idx: stats.macro_f1(y, p, idx), len(y), strata=y)`.
    """
    estimate = float(metric(None))
    reps = replicates(metric, n, n_resamples=n_resamples, seed=seed, strata=strata)
    low, high = percentile_interval(reps, estimate, confidence)
    return Interval(estimate, low, high, confidence, n_resamples)


_MAX_DISTINCT = 64


def mean_ci(
    scores: Float[np.ndarray, " n"],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """Bootstrap interval of the mean of per-example scores (accuracy, recall@k, top-1), in O(B) for 0/1 scores.

    A resample of n examples contains each distinct score value a Multinomial(n, share)
    number of times, so when the scores take few distinct values (0/1 for accuracy) we
    draw those counts directly: the same bootstrap distribution as resampling indices,
    without touching n elements per replicate. Many distinct values fall back to indices.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if n == 0:
        raise ValueError("Cannot bootstrap an empty set of predictions.")
    values, counts = np.unique(scores, return_counts=True)
    estimate = float(scores.mean())
    if len(values) > _MAX_DISTINCT:
        return metric_ci(lambda idx: mean_score(scores, idx), n, n_resamples=n_resamples, seed=seed, confidence=confidence)
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=n_resamples)
    reps = draws @ values / n
    low, high = percentile_interval(reps, estimate, confidence)
    return Interval(estimate, low, high, confidence, n_resamples)


def cluster_mean_ci(
    scores: Float[np.ndarray, " n"],
    clusters: np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """Bootstrap interval of the mean of per-example scores, resampling whole clusters.

    Examples of one cluster (an individual's images, a video's clips) are not independent;
    resampling them as units (Davison & Hinkley 1997, sec. 3.8) keeps that dependence in
    the interval, which is wider than a per-example one when clusters are homogeneous.
    A replicate draws G of the G clusters with replacement: Multinomial(G, 1/G) counts
    per cluster, so the replicate mean is (counts @ cluster sums) / (counts @ cluster sizes)
    in O(B G).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("Cannot bootstrap an empty set of predictions.")
    clusters = np.asarray(clusters)
    if clusters.shape[0] != len(scores):
        raise ValueError(f"clusters has {clusters.shape[0]} entries for {len(scores)} examples.")
    _, codes = np.unique(clusters, return_inverse=True)
    sums = np.bincount(codes, weights=scores)
    sizes = np.bincount(codes).astype(np.float64)
    g = len(sizes)
    draws = np.random.default_rng(seed).multinomial(g, np.full(g, 1.0 / g), size=n_resamples).astype(np.float64)
    reps = (draws @ sums) / (draws @ sizes)
    estimate = float(scores.mean())
    low, high = percentile_interval(reps, estimate, confidence)
    return Interval(estimate, low, high, confidence, n_resamples)


def crossed_mean_ci(
    scores: Float[np.ndarray, " n"],
    repeats: np.ndarray,
    units: np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """Bootstrap interval of the mean of per-example scores from repeated runs over the same test units.

    A few-shot protocol fits on a fresh training draw in each repeat and scores the same
    test examples every time, so a score belongs to a repeat r AND a test unit g (an
    example, or a cluster of them): a crossed design, with both factors samples (of
    training draws, of test examples). A replicate resamples the R repeats and the G units
    independently, with replacement (Multinomial(R, 1/R) counts m, Multinomial(G, 1/G)
    counts c), and takes the weighted mean sum_rg m_r c_g S_rg / sum_rg m_r c_g N_rg, where
    S and N are the score sums and counts of each (repeat, unit) cell: the "pigeonhole"
    bootstrap (Owen, "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2), 2007), in O(B R G).

    For a balanced design its variance is exactly sA/R + sB/G + sE/(RG), with sA, sB, sE the
    plug-in variances of the repeat effects, the unit effects and their interaction (a
    two-way decomposition; tested). The true variance of the mean has the same form, and
    the plug-in sA and sB each carry one extra sE/(RG), so the interval is mildly
    conservative (Owen 2007), the excess vanishing as R x G grows. With one repeat it is the
    bootstrap of units alone; with repeats that disagree it is wider than one repeat's.
    Every repeat must score every unit.
    """
    scores = np.asarray(scores, dtype=np.float64)
    reps = crossed_replicates(scores, repeats, units, n_resamples=n_resamples, seed=seed)
    estimate = float(scores.mean())
    low, high = percentile_interval(reps, estimate, confidence)
    return Interval(estimate, low, high, confidence, n_resamples)


def crossed_replicates(
    scores: Float[np.ndarray, " n"], repeats: np.ndarray, units: np.ndarray, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> Float[np.ndarray, " b"]:
    """The replicate means of `crossed_mean_ci` (repeats and units resampled independently)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if n == 0:
        raise ValueError("Cannot bootstrap an empty set of predictions.")
    repeats, units = np.asarray(repeats), np.asarray(units)
    if repeats.shape[0] != n or units.shape[0] != n:
        raise ValueError(f"repeats has {repeats.shape[0]} and units {units.shape[0]} entries for {n} examples.")
    _, r_codes = np.unique(repeats, return_inverse=True)
    _, g_codes = np.unique(units, return_inverse=True)
    r, g = int(r_codes.max()) + 1, int(g_codes.max()) + 1
    cell = r_codes * g + g_codes
    sums = np.bincount(cell, weights=scores, minlength=r * g).reshape(r, g)
    counts = np.bincount(cell, minlength=r * g).reshape(r, g).astype(np.float64)
    if (counts == 0).any():
        raise ValueError("A crossed bootstrap needs every repeat to score every test unit; some (repeat, unit) pair has no score.")
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // max(r, g))
    reps = []
    for lo in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - lo)
        m = rng.multinomial(r, np.full(r, 1.0 / r), size=b).astype(np.float64)
        c = rng.multinomial(g, np.full(g, 1.0 / g), size=b).astype(np.float64)
        reps.append(((m @ sums) * c).sum(1) / ((m @ counts) * c).sum(1))
    return np.concatenate(reps)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Paired bootstrap comparison of two models scored on the same examples (a minus b)."""

    difference: float
    """metric(a) - metric(b) on the full test set."""
    low: float
    """Lower end of the interval of the difference."""
    high: float
    """Upper end of the interval of the difference."""
    p_value: float
    """Two-sided p-value of "no difference"."""
    confidence: float
    """Nominal coverage of the interval."""


def paired_bootstrap(
    metric_a: Callable[[np.ndarray | None], float | np.ndarray],
    metric_b: Callable[[np.ndarray | None], float | np.ndarray],
    n: int,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    strata: np.ndarray | None = None,
    confidence: float = 0.95,
) -> Comparison:
    """Difference of two models' metrics on the same examples, resampled with the SAME indices.

    Pairing removes the between-example variance both models share, so it detects
    differences an overlap of two separate intervals misses. The p-value tests zero
    difference with the bootstrap distribution shifted to the null (Efron & Tibshirani 1993,
    sec. 16.4): p = (1 + #{|d* - d| >= |d|}) / (B + 1).
    """
    d = float(metric_a(None)) - float(metric_b(None))
    reps = np.concatenate(
        [
            np.asarray(metric_a(idx), dtype=np.float64) - np.asarray(metric_b(idx), dtype=np.float64)
            for idx in resample_indices(n, n_resamples=n_resamples, seed=seed, strata=strata)
        ]
    )
    low, high = percentile_interval(reps, d, confidence)
    extreme = np.abs(reps - d) >= abs(d) - 1e-12
    p = (1 + int(extreme.sum())) / (len(reps) + 1)
    return Comparison(d, low, high, float(min(1.0, p)), confidence)


def holm(p_values: Float[np.ndarray, " m"]) -> Float[np.ndarray, " m"]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order.

    Reject hypothesis i at family-wise level a when adjusted[i] <= a.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    if np.any((p < 0) | (p > 1) | np.isnan(p)):
        raise ValueError("p-values must lie in [0, 1].")
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out
