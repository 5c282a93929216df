"""Metrics as data, and the one builder that turns predictions into a task's numbers.

A `Metric` is a function of (true labels, predictions, optional bootstrap index array),
how its bootstrap resamples (plain, stratified by class, or clustered by the examples'
`group`), and the per-example score the store keeps. `summarize` computes, for every
route and task, the headline score and its interval, and the sub-scores per breakdown
level (sub-task, cluster, behaviour...) and, for multi-label metrics, per label column.

Every stored prediction keeps its true and predicted label (and score), so any metric,
and a paired comparison of two models (`stats.paired_bootstrap`), can be recomputed from
the store later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
from jaxtyping import Float

from biobench import stats

Resample = Literal["plain", "stratified", "clustered"]


def correct(y_true: np.ndarray, y_pred: np.ndarray) -> Float[np.ndarray, " n"]:
    """1.0 where the prediction is the label; for multi-label rows, the share of labels right."""
    hit = np.asarray(y_true) == np.asarray(y_pred)
    return hit.astype(np.float64) if hit.ndim == 1 else hit.mean(axis=1)


@dataclasses.dataclass(frozen=True)
class Replicates:
    """How a report recomputes a metric that is neither a mean of per-example scores nor a function of labels
    alone (a challenge score of ranked scores) from the stored predictions, under bootstrap draw counts."""

    value: Callable[[np.ndarray, Mapping[str, object], np.ndarray], np.ndarray]
    """`value(scores, fields, counts)`: the metric for each row of `counts` (b, n), how often each prediction is
    drawn (a row of ones: the point estimate); `scores` the stored per-example scores, `fields` each stored
    prediction's info `label`, `pred` and `group`."""
    strata: Callable[[Mapping[str, object]], np.ndarray] | None = None
    """The strata the task's own bootstrap resamples within, from the same fields (None: plain)."""


@dataclasses.dataclass(frozen=True)
class Metric:
    """A headline metric: its value, its per-example score, and how its bootstrap resamples."""

    name: str
    """Stored as the experiment's `metric`, e.g. 'accuracy'."""
    value: Callable[..., float | np.ndarray] | None = None
    """`value(y_true, y_pred, idx=None)`; None = the mean of the per-example scores (accuracy, top-1)."""
    resample: Resample = "plain"
    """'plain' (examples), 'stratified' (within class: macro metrics), 'clustered' (whole groups)."""
    example_score: Callable[[np.ndarray, np.ndarray], np.ndarray] = correct
    """The per-example score the store keeps with each prediction."""
    per_label: str | None = None
    """Multi-label metrics: the sub-score level of each label column ('trait'); names from the class names."""
    extra: tuple[tuple[str, Callable[[np.ndarray, np.ndarray], float]], ...] = ()
    """Further metrics `(name, fn(y_true, y_pred))` on the headline rows, stored as the sub-score 'metrics' (a challenge's other tracks)."""
    replicates: Replicates | None = None
    """For a report's paired tests: the metric recomputed from stored predictions (see `Replicates`), where
    neither the mean of the per-example scores nor `value(labels, predictions)` gives it."""
    cluster: str = "group"
    """With `resample='clustered'`: the prediction-info field that names each example's cluster: 'group' (the
    examples' group column: an individual, a video), or a sub-task's label ('task': NeWT resamples its sub-tasks)."""

    def __post_init__(self) -> None:
        if self.resample == "clustered" and self.value is not None:
            raise ValueError(f"Metric {self.name}: the clustered bootstrap is for means of per-example scores (value=None).")


ACCURACY = Metric("accuracy")
CLUSTERED_ACCURACY = Metric("accuracy", resample="clustered")
"""Accuracy whose interval resamples whole groups (videos, sites): for examples that are not independent."""
STRATIFIED_ACCURACY = Metric("accuracy", stats.accuracy, "stratified")
"""Accuracy whose interval resamples within each class (zero-shot sets: a class's share stays fixed)."""
MEAN_PER_CLASS_ACCURACY = Metric("mean_per_class_accuracy", stats.mean_per_class_accuracy, "stratified")
MACRO_F1 = Metric("macro_f1", stats.macro_f1, "stratified")
MULTILABEL_MEAN_F1 = Metric("mean_f1", stats.multilabel_mean_f1, per_label="trait")
SUBTASK_ACCURACY = Metric("accuracy", resample="clustered", cluster="task")
"""Accuracy pooled over sub-tasks whose interval resamples whole sub-tasks (NeWT: its 164 tasks are the clusters)."""
TOP1 = Metric("top1", resample="clustered")
"""Re-identification: share of queries whose best match shows the same individual, resampled by individual."""


@dataclasses.dataclass(frozen=True)
class Summary:
    """A metric over one experiment's predictions."""

    score: float
    ci_low: float
    ci_high: float
    example_scores: Float[np.ndarray, " n"]
    sub_scores: dict


def summarize(
    metric: Metric,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    levels: Mapping[str, Sequence] = {},
    level_meta: Mapping[str, Mapping[str, dict]] = {},
    headline: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    repeats: tuple[np.ndarray, np.ndarray] | None = None,
    label_names: Sequence[str] = (),
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Summary:
    """The headline (on the `headline` rows, default all) with its interval, and sub-scores.

    `levels` maps a breakdown name (e.g. 'cluster', 'task') to each row's value there (None
    reads '(none)'); `level_meta[level][value]` adds fields to that sub-score (n_train,
    chosen parameters). `groups` clusters rows for a clustered bootstrap. `repeats` =
    (each row's repeat, each row's test example) marks rows as (repeat, example) pairs of a
    few-shot protocol: the interval then resamples repeats and examples (or, for a
    clustered metric, groups) crossed (`stats.crossed_mean_ci`).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    scores = metric.example_score(y_true, y_pred)
    rows = np.arange(len(y_true)) if headline is None else np.flatnonzero(headline)
    if len(rows) == 0:
        raise ValueError("No test examples to score.")

    def at(a):
        return None if a is None else np.asarray(a)[rows]

    crossed = None if repeats is None else (at(repeats[0]), at(repeats[1]))
    ci = interval(metric, y_true[rows], y_pred[rows], scores[rows], at(groups), n_bootstrap, seed, repeats=crossed)
    sub: dict = {}
    for level, values in levels.items():
        by: dict[str, list[int]] = {}
        for i, v in enumerate(values):
            by.setdefault("(none)" if v is None or v == "" else str(v), []).append(i)
        meta = level_meta.get(level, {})
        sub[level] = {
            name: {metric.name: point(metric, y_true[r], y_pred[r], scores[r]), "n_test": len(r)} | meta.get(name, {})
            for name, r in sorted(by.items())
        }
    if metric.per_label is not None and y_true.ndim == 2:
        names = list(label_names) or [str(j) for j in range(y_true.shape[1])]
        sub[metric.per_label] = {
            names[j]: {"f1": float(stats.macro_f1(y_true[rows, j], y_pred[rows, j], labels=np.array([1]))),
                       "positive_rate": float(y_true[rows, j].mean())}
            for j in range(y_true.shape[1])
        }  # fmt: skip
    if metric.extra:
        sub["metrics"] = {name: float(fn(y_true[rows], y_pred[rows])) for name, fn in metric.extra}
    return Summary(ci.estimate, ci.low, ci.high, scores, sub)


def point(metric: Metric, y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray) -> float:
    """The metric on these rows."""
    return float(np.mean(scores)) if metric.value is None else float(metric.value(y_true, y_pred))


def interval(
    metric: Metric,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | None,
    n_bootstrap: int,
    seed: int,
    *,
    repeats: tuple[np.ndarray, np.ndarray] | None = None,
) -> stats.Interval:
    """The metric's point estimate and bootstrap interval, resampled as the metric says (crossed with `repeats`)."""
    if repeats is not None:
        if metric.value is not None:
            raise ValueError(f"Metric {metric.name}: the crossed bootstrap over repeats is for means of per-example scores.")
        if metric.resample == "clustered" and groups is None:
            raise ValueError(f"Metric {metric.name} resamples clusters, but the examples have no group column.")
        units = groups if metric.resample == "clustered" else repeats[1]
        return stats.crossed_mean_ci(scores, repeats[0], units, n_resamples=n_bootstrap, seed=seed)
    if metric.resample == "clustered":
        if groups is None:
            raise ValueError(f"Metric {metric.name} resamples clusters, but the examples have no group column.")
        if len(np.unique(groups)) > 1:
            return stats.cluster_mean_ci(scores, groups, n_resamples=n_bootstrap, seed=seed)
        # One cluster (a single NeWT task selected): nothing to resample between; resample its examples.
    if metric.value is None:
        return stats.mean_ci(scores, n_resamples=n_bootstrap, seed=seed)
    strata = y_true if metric.resample == "stratified" else None
    fn = metric.value
    return stats.metric_ci(lambda idx: fn(y_true, y_pred, idx), len(y_true), n_resamples=n_bootstrap, seed=seed, strata=strata)
