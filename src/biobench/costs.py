"""Cost-sensitive classification errors, with an open-set "unknown" label.

Challenges such as FungiCLEF (poisonous fungi) and SnakeCLEF (venomous snakes) weigh
mistakes by what they cost a user: calling a true "unknown" (a species outside the
training classes, label -1) a known species, or calling a dangerous species harmless.
Each function here gives one cost per example, so a metric is their mean, and a
bootstrap replicate (an index array, as in `biobench.stats`) is a mean over its rows.

Reference: the FungiCLEF 2023 evaluation, BohemianVRA/FGVC-Competitions,
FungiCLEF2023/evaluate.py (Picek et al., "Overview of FungiCLEF 2023", CLEF 2023).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
from jaxtyping import Float, Int

UNKNOWN = -1
"""The label of an example outside the known classes, in truths and predictions."""


def open_set_costs(
    y_true: Int[np.ndarray, " n"],
    y_pred: Int[np.ndarray, " n"],
    *,
    unknown: int = UNKNOWN,
    unknown_as_known: float = 1.0,
    known_as_unknown: float = 1.0,
) -> Float[np.ndarray, " n"]:
    """Per-example error: 0 when right, 1 for a known class taken for another known class,
    `unknown_as_known` for a true unknown given any known class, `known_as_unknown` for a
    known class predicted unknown. With both costs 1 this is the plain 0/1 error."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    true_unknown, pred_unknown = y_true == unknown, y_pred == unknown
    cost = np.where(y_true != y_pred, 1.0, 0.0)
    cost = np.where(true_unknown & ~pred_unknown, unknown_as_known, cost)
    return np.where(~true_unknown & pred_unknown, known_as_unknown, cost)


def critical_costs(
    y_true: Int[np.ndarray, " n"],
    y_pred: Int[np.ndarray, " n"],
    critical: Collection[int],
    *,
    missed: float = 100.0,
    false_alarm: float = 1.0,
) -> Float[np.ndarray, " n"]:
    """Per-example cost of confusing the `critical` classes (e.g. poisonous) with the rest:
    `missed` when a critical example is given a non-critical label (unknown included),
    `false_alarm` when a non-critical one (unknown included) is given a critical label."""
    crit = np.asarray(sorted(critical), dtype=np.int64)
    true_crit, pred_crit = np.isin(y_true, crit), np.isin(y_pred, crit)
    return np.where(true_crit & ~pred_crit, missed, 0.0) + np.where(~true_crit & pred_crit, false_alarm, 0.0)


def normalized_score(
    costs: Float[np.ndarray, " n"], worst: Float[np.ndarray, " n"], idx: Int[np.ndarray, "b n"] | None = None
) -> float | Float[np.ndarray, " b"]:
    """1 - (total cost) / (total worst possible cost), per replicate of `idx`: 1 is perfect, 0 the worst.

    Each replicate is normalised by its own worst case (not the pooled one)."""
    costs, worst = np.asarray(costs, dtype=np.float64), np.asarray(worst, dtype=np.float64)
    if idx is None:
        return float(1.0 - costs.sum() / worst.sum())
    idx = np.asarray(idx)
    return 1.0 - costs[idx].sum(axis=1) / worst[idx].sum(axis=1)
