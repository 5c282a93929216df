"""The probe route: features -> (pool) -> per sub-task: sample n_train, preprocess, probe -> metric.

Shared by every task that declares a probe. For each sub-task (or the whole task when it
has none), the training rows are a seeded class-balanced sample of `n_train` (-1 = all;
the generator depends only on the seed and the sub-task's name, so filtering other
sub-tasks never changes a sample), the spec's preprocessing steps are fitted on them, the
probe predicts the test rows, and `biobench.metrics.summarize` gives the headline, its
interval and the sub-scores. Leave-one-out probes see every row of a sub-task as both
gallery and query. A few-shot task (`TaskSpec.repeats`) instead draws k training examples
per class `n` times per sub-task (each draw its own generator), fits once per draw and
scores the same test rows each time; the interval then resamples draws and test examples
(`stats.crossed_mean_ci`). Probes that convert features themselves (`Probe.any_float`: ridge)
get them in their own dtype, as views where a split's rows are consecutive; the others get
a float64 copy (at iNat21 size, 500k x 768, that copy alone would be 3 GB).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

import numpy as np
import polars as pl
from jaxtyping import Float

from biobench import metrics, preprocess
from biobench.errors import DataError
from biobench.evaluation import EvalContext, TaskReport
from biobench.examples import NO_SUBTASK, Examples
from biobench.probes import Predictions, Probe
from biobench.sampling import repeat_rows, training_rows
from biobench.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)


def pooled(examples: Examples, features: Float[np.ndarray, "n d"]) -> tuple[pl.DataFrame, np.ndarray]:
    """One table row (the first of its images) and one feature vector per example, pooled where examples pool."""
    table = examples.table
    image = table["image"].to_numpy()
    features = np.asarray(features)
    if examples.pool is None:  # one image per example; most tasks list each image once, in order: no copy
        return table, features if np.array_equal(image, np.arange(len(features))) else features[image]
    x = features[image]
    keys = [c for c in ("subtask", "id") if c in table.columns]
    members = table.with_row_index("_row").group_by(keys, maintain_order=True).agg(pl.col("_row"))["_row"].to_list()
    flat = np.concatenate(members).astype(np.int64)
    starts = np.cumsum([0] + [len(m) for m in members[:-1]])
    if examples.pool == "mean":
        out = np.add.reduceat(x[flat].astype(np.float64), starts, axis=0) / np.diff(np.r_[starts, len(flat)])[:, None]
    else:
        out = np.maximum.reduceat(x[flat], starts, axis=0)
    return table[[int(m[0]) for m in members]], out


def rows_of(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x[rows], as a view (no copy) when `rows` is a run of consecutive rows, as a split's rows usually are."""
    rows = np.asarray(rows)
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
        return x[int(rows[0]) : int(rows[-1]) + 1]
    return x[rows]


def _fit(probe: Probe, steps: Sequence[str], x_train, y_train, x_test, seed: int, device: str) -> Predictions:
    x_train, x_test = preprocess.apply(steps, x_train, x_test)
    if probe.leave_one_out:
        x_test = x_train
    return probe(x_train, y_train, x_test, seed=seed, device=device)


def _warn_single_class(task: str, train_labels: Sequence[np.ndarray], n_train: int) -> None:
    """A sub-task trained on one class can only predict that class: say so (the scores mean nothing)."""
    single = sum(y.ndim == 1 and len(np.unique(y)) < 2 for y in train_labels)
    if single:
        logger.warning(
            "%s at n_train=%d: %d of %d sub-task(s) have a single class among their training examples, so their probe can "
            "only predict that class and every model scores the same there. Use n_train of at least 2 per class.",
            task, n_train, single, len(train_labels),
        )  # fmt: skip


def evaluate(spec: TaskSpec, options, examples: Examples, features: Float[np.ndarray, "n d"], ctx: EvalContext) -> TaskReport:
    """One experiment of the probe route (or the spec's own `evaluate`)."""
    if spec.evaluate is not None:
        return spec.evaluate(options, examples, features, ctx)
    probe = spec.probe_for(options)
    table, x = pooled(examples, features)
    labels = examples.labels(table)
    split = table["split"].to_numpy()
    subtask = table["subtask"].to_numpy() if "subtask" in table.columns else np.full(table.height, NO_SUBTASK)

    repeats = spec.repeats(options) if spec.repeats is not None else None
    jobs, meta = [], []
    for name in examples.subtasks:
        rows = np.flatnonzero(subtask == name)
        if probe.leave_one_out:
            train = test = rows
        else:
            train, test = rows[split[rows] == "train"], rows[split[rows] == "test"]
        if len(test) == 0 or len(train) == 0:
            logger.warning("%s%s has %d train and %d test examples; skipped.", spec.name, f" {name}" if name else "", len(train), len(test))
            continue
        if probe.leave_one_out:
            draws = [train]
        elif repeats is not None:
            draws = repeat_rows(labels, train, repeats, ctx.seed, name or spec.name)
        else:
            draws = [training_rows(labels, train, ctx.n_train, ctx.seed, name or spec.name)]
        as_is = probe.any_float and not spec.preprocess  # as they are: a view where the rows are consecutive
        # (otherwise a float64 copy, which preprocessing and the probe may change in place)
        take = (lambda rows: rows_of(x, rows)) if as_is else (lambda rows: np.asarray(x[rows], dtype=np.float64))
        x_test = None if probe.leave_one_out else take(test)  # shared by the draws
        for r, sample in enumerate(draws):
            x_train = take(sample)
            jobs.append((probe, spec.preprocess, x_train, labels[sample], x_train if x_test is None else x_test, ctx.seed, ctx.device))
            meta.append((name, r, sample, test))
    if not jobs:
        raise DataError(f"{spec.name}: no sub-task has both training and test examples.")
    _warn_single_class(spec.name, [labels[sample] for _, _, sample, _ in meta], ctx.n_train)

    start = time.perf_counter()
    if probe.parallel and len(jobs) > 1 and not probe.leave_one_out and probe.splits_fits(len(jobs), ctx.n_jobs):
        pairs = [(preprocess.apply(steps, x_tr, x_te), y_tr) for _, steps, x_tr, y_tr, x_te, _, _ in jobs]  # e.g. Ages' SVMs by fold
        outputs = probe.fit_many([(x_tr, y_tr, x_te) for (x_tr, x_te), y_tr in pairs], seed=ctx.seed, n_jobs=ctx.n_jobs)
    elif probe.parallel and ctx.n_jobs > 1 and len(jobs) > 1:
        import joblib

        outputs = joblib.Parallel(n_jobs=min(ctx.n_jobs, len(jobs)))(joblib.delayed(_fit)(*job) for job in jobs)
    else:
        outputs = [_fit(*job) for job in jobs]
    seconds_fit = time.perf_counter() - start

    start = time.perf_counter()
    test_rows = np.concatenate([test for *_, test in meta])
    y_pred = np.concatenate([np.asarray(out.labels) for out in outputs])
    preds = [out.scores for out in outputs]
    scores = None if any(s is None for s in preds) else np.concatenate([np.asarray(s) for s in preds])
    subtask_meta = {
        name or spec.name: {"n_train": int(len(train)), "params": out.params} for (name, _, train, _), out in zip(meta, outputs)
    }
    extra = {}
    if repeats is not None:
        repeat = np.concatenate([np.full(len(test), r) for _, r, _, test in meta])
        extra = {"repeats": repeat, "repeat_meta": {r: {"n_train": int(len(train))} for _, r, train, _ in meta}}
    report = score(spec, examples, table[test_rows], labels[test_rows], y_pred, scores, ctx, subtask_meta=subtask_meta, **extra)
    return dataclasses.replace(report, seconds_fit=seconds_fit, seconds_score=time.perf_counter() - start)


def score(
    spec: TaskSpec,
    examples: Examples,
    rows: pl.DataFrame,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray | None,
    ctx: EvalContext,
    *,
    subtask_meta: dict[str, dict] | None = None,
    extra_info: Sequence[dict] | None = None,
    n_train_actual: int | None = None,
    repeats: np.ndarray | None = None,
    repeat_meta: dict[int, dict] | None = None,
    **report_fields,
) -> TaskReport:
    """The TaskReport of test `rows` (table rows) and their predictions; shared by the probe and MLLM routes.

    Each prediction's info holds its sub-task, the task's `info` columns, the true and
    predicted label (and score); `extra_info` rows are merged in (MLLM answers). With
    `repeats` (each row's draw of a few-shot protocol; rows repeat the test examples once
    per draw), ids become `rNNN:ID`, each info holds its `repeat`, sub-scores gain a
    `repeat` level (`repeat_meta` adds to it) and the interval is crossed over draws and
    test examples (`metrics.summarize`).
    """
    levels: dict[str, Sequence] = {}
    crossed = None
    ids = rows["id"].to_list()
    if repeats is not None:
        width = len(str(int(repeats.max())))
        names = [f"{int(r):0{width}d}" for r in repeats]
        keys = [c for c in ("subtask", "id") if c in rows.columns]
        crossed = (repeats, np.asarray(["\x1f".join(map(str, k)) for k in rows.select(keys).iter_rows()]))
        ids = [f"r{n}:{i}" for n, i in zip(names, ids)]
        extra_info = [{**(extra_info[i] if extra_info is not None else {}), "repeat": int(r)} for i, r in enumerate(repeats)]
        levels["repeat"] = names
    has_subtasks = "subtask" in rows.columns
    subtasks = rows["subtask"].to_list() if has_subtasks else None
    info_cols = {c: rows[c].to_list() for c in examples.info}
    # The bootstrap cluster (individual, video) goes with each prediction, so reports resample groups too.
    if "group" in rows.columns and "group" not in info_cols:
        info_cols["group"] = rows["group"].to_list()
    infos = []
    for i in range(rows.height):
        item: dict = {}
        if has_subtasks:
            item[examples.subtask_label] = subtasks[i]
        for c, values in info_cols.items():
            item[c] = None if values[i] == "" else values[i]
        item["label"] = _plain(y_true[i])
        item["pred"] = _plain(y_pred[i])
        if scores is not None:
            item["score"] = _plain(scores[i])
        if extra_info is not None:
            item.update(extra_info[i])
        infos.append(item)

    levels.update({c: info_cols[c] for c in examples.info})  # not the group: one sub-score per individual is noise
    if has_subtasks:
        levels[examples.subtask_label] = subtasks
    meta = {examples.subtask_label: subtask_meta} if has_subtasks and subtask_meta else {}
    if repeats is not None and repeat_meta:
        meta["repeat"] = {f"{r:0{width}d}": m for r, m in repeat_meta.items()}
    headline = None
    if spec.headline is not None:
        headline = np.asarray([s == spec.headline for s in subtasks]) if has_subtasks else None
        if headline is None or not headline.any():
            raise DataError(f"{spec.name}: the headline sub-task {spec.headline!r} has no test examples; check the dataset.")
    groups = rows["group"].to_numpy() if "group" in rows.columns else None
    if spec.metric.resample == "clustered" and spec.metric.cluster != "group":  # clusters named by another info field (NeWT: its task)
        groups = np.asarray([str(item.get(spec.metric.cluster)) for item in infos])
    summary = metrics.summarize(
        spec.metric, y_true, y_pred, levels=levels, level_meta=meta, headline=headline, groups=groups, repeats=crossed,
        label_names=examples.names(NO_SUBTASK) if y_true.ndim == 2 else (), n_bootstrap=ctx.n_bootstrap, seed=ctx.seed,
    )  # fmt: skip
    sub_scores = summary.sub_scores
    if not has_subtasks and subtask_meta:
        ((_, only),) = subtask_meta.items()
        sub_scores = {**sub_scores, "probe": only}
    if n_train_actual is None:
        n_train_actual = max((m["n_train"] for m in (subtask_meta or {}).values()), default=0)
    return TaskReport(
        metric=spec.metric.name,
        score=summary.score,
        ci_low=summary.ci_low,
        ci_high=summary.ci_high,
        n_train_actual=n_train_actual,
        example_ids=ids,
        example_scores=summary.example_scores,
        example_info=infos,
        sub_scores=sub_scores,
        **report_fields,
    )


def _plain(v):
    """A JSON-friendly scalar or list."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v.item() if isinstance(v, np.generic) else v
