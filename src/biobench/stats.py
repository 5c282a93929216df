"""Metrics and bootstrap confidence intervals, vectorised.

A bootstrap replicate resamples the test examples with replacement once; B replicates
are drawn as a (B, n) index array (in memory-bounded chunks) and the metric is computed
for all of them at once. No Python loop runs per example or per replicate.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int

DEFAULT_RESAMPLES = 1000
_MAX_CHUNK_ELEMENTS = 8_000_000  # indices per chunk: ~64 MB of int64


def mean_score(
    scores: Float[np.ndarray, " n"], idx: Int[np.ndarray, "b n"] | None = None
) -> float | Float[np.ndarray, " b"]:
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
    """The metric on `n_resamples` resamples of the examples (seeded, reproducible)."""
    n = len(scores)
    if n == 0:
        raise ValueError("Cannot bootstrap an empty set of predictions.")
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // n)
    out = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        out[start : start + b] = metric(scores, rng.integers(0, n, size=(b, n)))
    return out


def bootstrap_ci(
    scores: Float[np.ndarray, " n"],
    metric=mean_score,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric` over examples."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    reps = bootstrap_replicates(scores, metric, n_resamples=n_resamples, seed=seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(reps, [alpha, 1 - alpha])
    return float(low), float(high)
