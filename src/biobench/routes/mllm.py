"""The MLLM route: the probe route's sub-tasks and examples, answered by a multimodal LLM.

Each sub-task becomes a `biobench.mllm.evaluate.Group` (its class names, its training
images as the pool of in-context examples, its test images as questions); the test rows,
the metric, the interval and the sub-scores are the probe route's (`routes.probe.score`),
so an MLLM row and a probe row at the same `n_train` compare like for like.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from biobench.errors import DataError
from biobench.evaluation import EvalContext, TaskReport
from biobench.examples import NO_SUBTASK, Examples
from biobench.routes.probe import score
from biobench.tasks.spec import TaskSpec


def groups(spec: TaskSpec, examples: Examples) -> tuple[list, list[np.ndarray]]:
    """One Group per sub-task with training and test rows, and each group's test rows in the table."""
    from biobench.mllm.evaluate import Group

    if examples.pool is not None:
        raise DataError(f"{spec.name}: the MLLM route cannot prompt with pooled examples (one image each).")
    t = examples.table
    labels = examples.labels()
    split = t["split"].to_numpy()
    subtask = t["subtask"].to_numpy() if "subtask" in t.columns else np.full(t.height, NO_SUBTASK)
    image = t["image"].to_numpy()
    paths, image_ids = examples.images.paths, examples.images.ids
    out, test_rows = [], []
    for name in examples.subtasks:
        rows = np.flatnonzero(subtask == name)
        train, test = rows[split[rows] == "train"], rows[split[rows] == "test"]
        if len(train) == 0 or len(test) == 0:
            continue
        names = tuple(examples.names(name))
        if not names:
            raise DataError(f"{spec.name}: sub-task {name or spec.name} has no class names, which MLLM prompts need.")
        out.append(
            Group(
                name=name or spec.name,
                classnames=names,
                train_paths=[paths[i] for i in image[train]],
                train_labels=labels[train],
                test_ids=[image_ids[i] for i in image[test]],  # prompts are seeded per image
                test_paths=[paths[i] for i in image[test]],
                test_labels=labels[test],
            )
        )
        test_rows.append(test)
    if not out:
        raise DataError(f"{spec.name}: no sub-task has both training and test examples.")
    return out, test_rows


def evaluate(spec: TaskSpec, examples: Examples, client, ctx: EvalContext) -> TaskReport:
    """One experiment of the MLLM route: `ctx.n_train` in-context examples per question."""
    from biobench.mllm.evaluate import classify, summary

    start = time.perf_counter()
    task_groups, test_rows = groups(spec, examples)
    outcomes = classify(client, task_groups, ctx)
    s = summary(outcomes, {g.name: g.classnames for g in task_groups})
    seconds_fit = time.perf_counter() - start

    start = time.perf_counter()
    # Outcomes come in group order and, within a group, in test order; debug runs keep a prefix.
    by_group: dict[str, list[int]] = {}
    for k, o in enumerate(outcomes):
        by_group.setdefault(o.group, []).append(k)
    rows, order = [], []
    for g, test in zip(task_groups, test_rows):
        ks = by_group.get(g.name, [])
        answered = {outcomes[k].example_id: k for k in ks}
        for j, image_id in enumerate(g.test_ids):
            if image_id in answered:
                rows.append(test[j])
                order.append(answered[image_id])
    rows_arr = np.asarray(rows, dtype=np.int64)
    table = examples.table[rows_arr]
    y_true = examples.labels(table)
    y_pred = np.asarray([-1 if outcomes[k].pred is None else outcomes[k].pred for k in order], dtype=np.int64)
    report = score(
        spec, examples, table, y_true, y_pred, None, ctx,
        extra_info=[s.info[k] for k in order], n_train_actual=s.n_shots_max,
        seconds_fit=seconds_fit, cost_usd=s.cost_usd, n_failed=s.n_failed, parse_rate=s.parse_rate,
    )  # fmt: skip
    return dataclasses.replace(report, seconds_score=time.perf_counter() - start)
