"""BioCLIP 2's few-shot protocol on its zero-shot sets: SimpleShot over seeded k-shot folds, from cached image features.

Gu et al. 2025 (BioCLIP 2), `src/evaluation/few_shot.py` of github.com/Imageomics/bioclip-2:
image features are L2-normalised; for each of `nfold` (5) folds and each k of `kshot_list`
(1, 5), every class gives k random images as its support set and all its other images are
test images; support and test features are centred on the support mean and L2-normalised
again (their `CL2N`), each class's centroid is the mean of its normalised support features,
and a test image takes the class of the nearest centroid (Euclidean). They report the mean
of the folds' accuracies.

Here (`evaluate`): the same steps per sub-task (IDLE-OO's five camera-trap sets each on their
own classes), with `biobench.probes.simpleshot.fit_predict` as the classifier. Each fold's
support is `sampling.k_per_class` with its own generator (experiment seed, "SUBTASK/fold r"),
so folds do not depend on how many are drawn (BioCLIP 2 seeds Python's `random` with the fold
index and shuffles in file order; the draws are not theirs, the protocol is). A class with
fewer than k + 1 images gives all of them to the support set and has no test image that fold.

Score: accuracy over every (fold, test image) pair. Every fold has the same number of test
images per class (count - min(k, count)), so this equals the mean of the folds' accuracies,
BioCLIP 2's number. Interval: the test images are resampled within their class (as the
zero-shot interval is), each image carrying the sum and count of its scores over the folds
that tested it (a ratio estimate); the draws of support sets are not resampled, so the
interval is for these folds. Example ids are `rN:ID` (fold N), as few-shot repeats are
everywhere; each fold's and each class's accuracy is a sub-score.
"""

from __future__ import annotations

import time

import numpy as np
from jaxtyping import Float

from biobench import stats
from biobench.errors import DataError
from biobench.evaluation import EvalContext, TaskReport
from biobench.examples import NO_SUBTASK, Examples
from biobench.sampling import k_per_class, task_rng

DEFAULT_SHOTS = 5
"""Shots per class when the grid's n_train is -1 (the larger of BioCLIP 2's two settings)."""


def _l2(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def folds(labels: np.ndarray, rows: np.ndarray, shots: int, n_folds: int, seed: int, name: str) -> list[np.ndarray]:
    """Each fold's support rows: `shots` of `rows` per class (all of a smaller class), fold r from its own generator."""
    return [rows[k_per_class(labels[rows], shots, task_rng(seed, f"{name}/fold {r}"))] for r in range(n_folds)]


def evaluate(task: str, examples: Examples, features: Float[np.ndarray, "n d"], ctx: EvalContext, *, n_folds: int) -> TaskReport:
    """BioCLIP 2's few-shot SimpleShot (see the module docstring) at `ctx.n_train` shots per class (-1: `DEFAULT_SHOTS`)."""
    from biobench.probes import simpleshot

    start = time.perf_counter()
    shots = DEFAULT_SHOTS if ctx.n_train < 0 else ctx.n_train
    if n_folds < 1:
        raise DataError(f"{task}: folds must be at least 1, got {n_folds}.")
    table = examples.table
    x = _l2(np.asarray(features, dtype=np.float64)[table["image"].to_numpy()])
    labels = examples.labels(table)
    subtask = table["subtask"].to_numpy() if "subtask" in table.columns else np.full(table.height, NO_SUBTASK)
    ids = table["id"].to_list()
    width = len(str(n_folds - 1))
    out_ids, out_scores, infos, units, unit_class = [], [], [], [], []
    fold_hits: dict[str, list] = {}
    class_hits: dict[str, list] = {}
    seconds_fit = 0.0
    for name in examples.subtasks:
        rows = np.flatnonzero(subtask == name)
        if not len(rows):
            continue
        names = examples.names(name)
        for r, support in enumerate(folds(labels, rows, shots, n_folds, ctx.seed, name or task)):
            test = np.setdiff1d(rows, support)
            if not len(test):
                continue
            t0 = time.perf_counter()
            pred = simpleshot.fit_predict(x[support], labels[support], x[test], device=ctx.device)
            seconds_fit += time.perf_counter() - t0
            hit = (pred == labels[test]).astype(np.float64)
            fold = f"{r:0{width}d}"
            fold_hits.setdefault(fold, []).append(hit)
            for i, h, p in zip(test, hit, pred):
                cls = f"{name}/{names[labels[i]]}" if name else names[labels[i]]
                class_hits.setdefault(cls, []).append(h)
                out_ids.append(f"r{fold}:{ids[i]}")
                out_scores.append(h)
                info = {"label": int(labels[i]), "pred": int(p), "repeat": r, "n_support": int(len(support))}
                if name:
                    info[examples.subtask_label] = name
                infos.append(info)
                units.append(int(i))
                unit_class.append(cls)
    if not out_ids:
        raise DataError(f"{task}: no class has more than {shots} images, so {shots}-shot folds leave nothing to test.")
    scores = np.asarray(out_scores)
    _, unit_codes = np.unique(np.asarray(units), return_inverse=True)
    sums = np.bincount(unit_codes, weights=scores)
    counts = np.bincount(unit_codes).astype(np.float64)
    strata = np.unique(np.asarray(unit_class), return_inverse=True)[1]
    per_unit_class = np.zeros(len(sums), dtype=np.int64)
    per_unit_class[unit_codes] = strata

    def ratio(idx):  # idx: None (the estimate) or a batch of resampled unit indices, one row per replicate
        return sums.sum() / counts.sum() if idx is None else sums[idx].sum(axis=-1) / counts[idx].sum(axis=-1)

    ci = stats.metric_ci(ratio, len(sums), n_resamples=ctx.n_bootstrap, seed=ctx.seed, strata=per_unit_class)
    sub = {
        "repeat": {f: {"accuracy": float(np.concatenate(h).mean()), "n_test": int(sum(map(len, h)))} for f, h in fold_hits.items()},
        "class": {c: {"accuracy": float(np.mean(h)), "n_test": len(h)} for c, h in sorted(class_hits.items())},
        "protocol": {"shots": shots, "folds": n_folds, "probe": "simpleshot"},
    }
    return TaskReport(
        metric="accuracy",
        score=float(scores.mean()),
        ci_low=ci.low,
        ci_high=ci.high,
        n_train_actual=max(int(i["n_support"]) for i in infos),
        example_ids=out_ids,
        example_scores=scores,
        example_info=infos,
        sub_scores=sub,
        seconds_fit=seconds_fit,
        seconds_score=time.perf_counter() - start - seconds_fit,
    )
