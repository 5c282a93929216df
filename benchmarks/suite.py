"""The probe stage of the whole suite for one model: every registered task's evaluation on generated features.

For each registered task, its fixture (`make_fixture` + `read`: the task's real example
structure: sub-tasks, pooled clips, re-identification, multi-label traits) is tiled up to
the task's published size (`SIZES`, times `--scale`): copies of the fixture's examples with
new ids, as new sub-tasks where the task's size is counted in sub-tasks (NeWT: also copies
within each sub-task, so a sub-task has about its published size, ~100 / 100 images), as new
classes where the published class count is larger than the fixture's, else as more
examples of the same classes. Features (d = 768, float32) are class centroids plus noise.
Then `biobench.routes.probe.evaluate` runs exactly as an experiment would, and the table
gives per task: examples, classes (or sub-tasks), seconds in the probe stage
(`TaskReport.seconds_fit`) and the scoring / bootstrap stage (`seconds_score`).

The seed way: NeWT's per-task `RandomizedSearchCV` (`benchmarks/newt_search.py`) on
`--seed-subtasks` tasks, extrapolated to all of them (marked "extrapolated"). The other
probes' seed ways are measured in `benchmarks/probes.py` (ridge, bootstrap, exemplar SVMs).

Fixed-step probes (LayerNorm + linear head: herbarium19, ecdysis) cost the same per step at
any size past one batch; `--linear-steps` trains them fewer steps and scales their probe time
to the real number (marked "extrapolated"), since 10,000 steps on CPU take tens of minutes.
`--scale` below 1 shrinks every task (the table says which scale ran).

The last line is one JSON object: {"scale", "tasks": {name: {"n", "classes", "probe_s",
"bootstrap_s", "seed_s"?}}, "probe_total_s", "bootstrap_total_s", "total_s"}.

    python benchmarks/suite.py [--scale 1.0] [--tasks newt,ages,...] [--device cpu] [--seed-subtasks 3] [--threads 1]
                               [--linear-steps 0] [--jobs N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import polars as pl

# Published sizes: (examples, classes or sub-tasks, what the count counts). Approximate where marked "~".
SIZES = {
    "newt": (164 * 220, 164, "sub-tasks"),  # 164 binary tasks, ~110 train / 110 test each
    "ages": (3 * 1_320, 12, "classes"),  # NeWT's 12 ml_age tasks in 3 settings (~)
    "hybrids": (2_000, 2, "classes"),  # HDR challenge images (~)
    "plankton": (67_000, 50, "classes"),  # SYKE-plankton IFCB 2022 (~)
    "beluga": (5_902, 788, "classes"),  # individuals
    "fishnet": (94_532, 9, "classes"),  # traits (multi-label)
    "kabr": (3_600, 8, "classes"),  # behaviour clips (~), 16 frames each
    "imagenet": (1_331_167, 1_000, "classes"),
    "rarespecies": (11_983, 400, "classes"),
    "mammalnet": (18_346, 173, "classes"),  # videos (~)
    "ecdysis": (10_000, 100, "classes"),  # (~)
    "birds525": (87_260, 525, "classes"),
    "leopard": (6_806, 430, "classes"),  # individuals
    "herbarium19": (36_904, 683, "classes"),
    "fungiclef": (356_770, 1_604, "classes"),  # (~)
    "inat21": (600_000, 10_000, "classes"),
    "plantnet": (275_034, 1_081, "classes"),
    "iwildcam": (172_600, 182, "classes"),
}
DIM = 768


def tiled(spec, examples, target_n: int, target_k: int, counts: str):
    """`examples` copied until it has about `target_n` rows; new sub-tasks or classes as `counts` says."""
    t = examples.table
    reps = max(1, int(round(target_n / t.height)))
    n_img = len(examples.images)
    int_labels = t.schema["label"].is_integer()
    by_subtask = counts == "sub-tasks" and "subtask" in t.columns
    n_cls = int(t["label"].max()) + 1 if int_labels else 0
    by_class = not by_subtask and int_labels and target_k > n_cls
    cls_reps = max(1, min(reps, -(-target_k // max(n_cls, 1))))  # copies that are new classes; the rest repeat them
    row_reps = 1  # copies that stay in their sub-task: a sub-task's size is the published one (NeWT: ~220 images)
    if by_subtask:
        n_sub = t["subtask"].n_unique()
        row_reps = max(1, int(target_n / max(target_k, 1) / (t.height / n_sub)))
        reps = row_reps * -(-target_k // n_sub)
    parts = []
    for r in range(reps):
        part = t.with_columns(pl.col("id").cast(pl.String) + f"~{r}", pl.col("image") + r * n_img)
        if by_subtask:
            part = part.with_columns(pl.col("subtask") + f"~{r // row_reps}")
        elif by_class:
            part = part.with_columns(pl.col("label") + (r % cls_reps) * n_cls)
        parts.append(part)
    table = pl.concat(parts)
    classnames = dict(examples.classnames)
    if by_subtask:
        classnames = {f"{s}~{r}": v for s, v in examples.classnames.items() for r in range(reps // row_reps)}
    elif by_class:
        classnames = {s: [f"{name}~{r}" for r in range(cls_reps) for name in v] for s, v in examples.classnames.items()}
    img = examples.images
    images = dataclasses.replace(
        img, ids=[f"{i}~{r}" for r in range(reps) for i in img.ids], paths=list(img.paths) * reps,
        crops=None if img.crops is None else list(img.crops) * reps, table=None,
    )  # fmt: skip
    return dataclasses.replace(examples, images=images, table=table, classnames=classnames), reps


def features(examples, seed: int = 0) -> np.ndarray:
    """Centroid of each image's (sub-task, label) plus unit noise, float32 (n_images, DIM)."""
    t = examples.table.unique("image", keep="first", maintain_order=True).sort("image")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(examples.images), DIM), dtype=np.float32)
    if t.schema["label"].is_integer():
        key = t["label"].cast(pl.String)
        if "subtask" in t.columns:
            key = t["subtask"] + "/" + key
        codes = key.cast(pl.Categorical).to_physical().to_numpy()
        centroids = rng.standard_normal((int(codes.max()) + 1, DIM), dtype=np.float32)
        x[t["image"].to_numpy()] += 1.5 * centroids[codes]
    return x


def main() -> None:
    from biobench import tasks as registry
    from biobench.config import default_workers
    from biobench.evaluation import EvalContext
    from biobench.routes import probe as route

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each task's published size")
    parser.add_argument("--tasks", default="", help="comma-separated (default: every registered task)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed-subtasks", type=int, default=3, help="NeWT sub-tasks the seed way runs on (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (0: their defaults)")
    parser.add_argument(
        "--linear-steps", type=int, default=0,
        help="train fixed-step probes (a task option `steps`, e.g. herbarium19, ecdysis) this many steps and scale their "
        "probe time to the task's own steps (marked extrapolated); 0: the task's own steps",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=default_workers(), help="worker processes for parallel probes (n_jobs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        import threadpoolctl
        import torch

        threadpoolctl.threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)
    names = [n for n in args.tasks.split(",") if n] or registry.task_names()
    results, rows = {}, []
    for name in names:
        try:
            spec = registry.get_task(name)
            if "probe" not in spec.routes:
                results[name] = {"skipped": f"routes {list(spec.routes)}: no probe stage"}
                print(f"{name:12s} skipped: no probe route ({', '.join(spec.routes)})", flush=True)
                continue
            n, k, counts = SIZES.get(name, (0, 0, "classes"))
            with tempfile.TemporaryDirectory() as tmp:
                spec.fixture(Path(tmp) / name, seed=0)
                options = spec.options(data=Path(tmp) / name)
                steps = getattr(options, "steps", None)
                if args.linear_steps and steps and args.linear_steps < steps:
                    options = dataclasses.replace(options, steps=args.linear_steps)
                base = spec.read(options)
                examples, reps = tiled(spec, base, max(1, int(n * args.scale)), max(1, int(k * args.scale)), counts)
                x = features(examples)
                ctx = EvalContext(n_train=-1, seed=0, n_bootstrap=args.n_bootstrap, n_jobs=args.jobs, device=args.device)
                start = time.perf_counter()
                report = route.evaluate(spec, options, examples, x, ctx)
                wall = time.perf_counter() - start
            n_rows = examples.table.height
            k_now = examples.table["subtask"].n_unique() if counts == "sub-tasks" else (
                examples.table["label"].n_unique() if examples.table.schema["label"].is_integer() else k)  # fmt: skip
            fit, score = report.seconds_fit or 0.0, report.seconds_score or 0.0
            entry = {"n": n_rows, "classes": int(k_now), "probe_s": fit, "bootstrap_s": score, "wall_s": wall}
            if getattr(options, "steps", None) != steps:  # time per step is constant (fixed batch): scale to the real steps
                entry.update(probe_s=fit * steps / options.steps, probe_measured_s=fit, probe_extrapolated_from_steps=options.steps)
                fit = entry["probe_s"]
            if name == "newt" and args.seed_subtasks:
                entry["seed_s"] = seed_newt(examples, x, args.seed_subtasks)
                entry["seed_extrapolated"] = True
            results[name] = entry
            rows.append((name, entry))
            print(f"{name:12s} {n_rows:>9,d} rows {int(k_now):>6,d} {counts:9s} probe {fit:8.2f} s  bootstrap {score:7.2f} s"
                  + (f" (probe EXTRAPOLATED from {options.steps} of {steps} steps)" if "probe_measured_s" in entry else "")
                  + (f"  seed way {entry['seed_s']:8.1f} s (EXTRAPOLATED)" if "seed_s" in entry else ""), flush=True)  # fmt: skip
        except Exception as err:  # one task's failure must not hide the others' numbers
            traceback.print_exc(file=sys.stderr)
            results[name] = {"error": f"{type(err).__name__}: {err}"}
            print(f"{name:12s} failed: {type(err).__name__}: {err}", flush=True)
    missing = [n for n, e in results.items() if "skipped" not in e and n not in SIZES]
    if missing:
        print(f"no published size in SIZES for {missing}: run at their fixture's size", flush=True)
    probe_total = sum(e.get("probe_s", 0.0) for e in results.values())
    boot_total = sum(e.get("bootstrap_s", 0.0) for e in results.values())
    print(f"total: probe {probe_total:.1f} s, bootstrap {boot_total:.1f} s, both {probe_total + boot_total:.1f} s (scale {args.scale})")
    print(json.dumps({"scale": args.scale, "tasks": results, "probe_total_s": probe_total, "bootstrap_total_s": boot_total,
                      "total_s": probe_total + boot_total}))  # fmt: skip


def seed_newt(examples, x: np.ndarray, n_sub: int) -> float:
    """NeWT's seed way (`newt_search.seed_way`) on the first `n_sub` sub-tasks, extrapolated to all."""
    from biobench import preprocess
    from biobench.tasks import newt

    sys.path.insert(0, str(Path(__file__).parent))
    from newt_search import seed_way

    t = examples.table
    subtasks = t["subtask"].unique(maintain_order=True).to_list()
    start = time.perf_counter()
    for s in subtasks[:n_sub]:
        rows = t.filter(pl.col("subtask") == s)
        tr, te = rows.filter(pl.col("split") == "train"), rows.filter(pl.col("split") == "test")
        a, b = preprocess.apply(
            newt.SPEC.preprocess, x[tr["image"].to_numpy()].astype(np.float64), x[te["image"].to_numpy()].astype(np.float64)
        )
        seed_way(a, tr["label"].to_numpy(), b, 0)
    return (time.perf_counter() - start) / n_sub * len(subtasks)


if __name__ == "__main__":
    main()
