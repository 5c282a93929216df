"""NeWT answered by a multimodal LLM: each binary task asked as "'A' or 'B'?", with in-context examples.

The same tasks, filters, splits and metric as `biobench.tasks.newt` (accuracy pooled
over all test images, sub-scores per cluster, subcluster and task), so an MLLM row
and a probe row at the same `n_train` compare like for like. Class names come from
`newt_classnames` through each row's `text_label` (the seeds used the table's raw keys
in dictionary order, so the names in the prompt and the 0/1 labels could disagree).
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from biobench.errors import DataError
from biobench.mllm.evaluate import Group, classify, summary
from biobench.tasks import newt
from biobench.tasks.base import EvalContext, TaskReport
from biobench.tasks.newt_classnames import CLASSNAMES


def class_names(task: str, text_labels: dict[int, str]) -> tuple[str, str]:
    """Prompt names of classes 0 and 1 of `task`, given each label's text_label."""
    table = CLASSNAMES.get(task, {})
    names = tuple(table.get(text_labels[i]) or text_labels[i].replace("_", " ") for i in (0, 1))
    if names[0] == names[1]:
        names = (f"{names[0]} (0)", f"{names[1]} (1)")
    return names  # type: ignore[return-value]


def groups(cfg: newt.Config) -> tuple[list[Group], dict[str, tuple[str, str, str]]]:
    """One `Group` per included NeWT task, and each task's (cluster, subcluster)."""
    df = newt.read_labels(cfg)
    if "text_label" not in df.columns:
        raise DataError(f"{Path(cfg.data) / newt.LABELS_CSV} lacks the text_label column, which MLLM prompts need.")
    root = Path(cfg.data) / newt.IMAGES_DIR
    out, meta = [], {}
    for (task,), rows in sorted(df.group_by("task", maintain_order=True), key=lambda kv: kv[0][0]):
        texts = {int(l): str(t) for l, t in rows.select("label", "text_label").unique().iter_rows()}
        if set(texts) != {0, 1}:
            raise DataError(f"NeWT task {task} needs images of both labels with a text_label each; has {sorted(texts)}.")
        train = rows.filter(pl.col("split") == "train")
        test = rows.filter(pl.col("split") == "test")
        if train.height == 0 or test.height == 0:
            continue
        out.append(
            Group(
                name=task,
                classnames=class_names(task, texts),
                train_paths=[root / f"{i}.jpg" for i in train["id"]],
                train_labels=train["label"].to_numpy(),
                test_ids=test["id"].to_list(),
                test_paths=[root / f"{i}.jpg" for i in test["id"]],
                test_labels=test["label"].to_numpy(),
            )
        )
        first = rows.row(0, named=True)
        meta[task] = (first["task_cluster"], first["task_subcluster"] or "")
    return out, meta


def evaluate(cfg: newt.Config, client, ctx: EvalContext) -> TaskReport:
    start = time.perf_counter()
    task_groups, meta = groups(cfg)
    outcomes = classify(client, task_groups, ctx)
    s = summary(outcomes, {g.name: g.classnames for g in task_groups})
    seconds_fit = time.perf_counter() - start

    start = time.perf_counter()
    info = []
    for o, item in zip(outcomes, s.info, strict=True):
        cluster, subcluster = meta[o.group]
        info.append({"task": o.group, "cluster": cluster, "subcluster": subcluster or None, **item})
    return newt.accuracy_report(
        [o.example_id for o in outcomes],
        s.scores,
        info,
        ctx,
        n_train_actual=s.n_shots_max,
        seconds_fit=seconds_fit,
        started=start,
        cost_usd=s.cost_usd,
        n_failed=s.n_failed,
        parse_rate=s.parse_rate,
    )
