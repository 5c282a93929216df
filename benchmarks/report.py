"""Time the full report on a generated store: 50 models x 20 tasks x 5 n_train x 3 seeds, 2,000 test examples per task.

The store is generated once (in the results schema, with every per-example prediction: 30
million rows, about 2 GB, and each experiment's packed `prediction_arrays` row, as
`Store.write` keeps them) and cached at --store; then every stage of the report runs and
prints its seconds: reading the experiments, reading the predictions of the leaderboard's
columns, the paired bootstraps and tests (one weight matrix per task, shared by every
model), the mean column, and rendering HTML, JSON, CSV and the terminal table. The target
is under 10 s in all on a 2-core machine (wall and CPU seconds are printed, with the load
average: on a shared machine the wall time counts other people's work too). Tasks mix every recomputed metric: accuracy
(some clustered by group), macro-F1, mean per-class accuracy and multi-label mean F1.

    python benchmarks/report.py [--models 50 --tasks 20 --n-train 5 --seeds 3 --n-test 2000] [--store PATH]

The last line is a JSON object with the seconds per stage. `--store` on a database written
before `prediction_arrays` existed times the row read of older stores.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

from biobench import report, stats
from biobench.store import Store, packed_row

N_CLASSES = 20
N_TRAITS = 9


def metric_of(t: int, n_tasks: int) -> str:
    kinds = {n_tasks - 1: "mean_f1", n_tasks - 2: "mean_per_class_accuracy", n_tasks - 3: "macro_f1", n_tasks - 4: "macro_f1"}
    return kinds.get(t, "accuracy")


def generate(path: Path, n_models: int, n_tasks: int, n_trains: list[int], n_seeds: int, n_test: int) -> None:
    rng = np.random.default_rng(0)
    Store(path).close()  # the schema
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA journal_mode = OFF")
    skill = rng.normal(0, 0.08, size=n_models)
    ids = [f"e{i:05d}" for i in range(n_test)]
    versions = json.dumps({"numpy": np.__version__, "biobench": "0.1.0"})
    exp_id = 0
    conn.execute("BEGIN")
    for t in range(n_tasks):
        metric = metric_of(t, n_tasks)
        task = f"task{t:02d}"
        y = rng.integers(0, N_CLASSES, size=n_test)
        traits = rng.random((n_test, N_TRAITS)) < 0.3
        clustered = metric == "accuracy" and t % 5 == 0
        groups = rng.integers(0, n_test // 10, size=n_test) if clustered else None
        task_skill = rng.normal(0, 0.05, size=n_models)
        for m in range(n_models):
            for n_train in n_trains:
                size = 100 if n_train < 0 else n_train
                for seed in range(n_seeds):
                    p = np.clip(0.55 + skill[m] + task_skill[m] + 0.05 * np.log2(size) / 3 + rng.normal(0, 0.01), 0.05, 0.98)
                    hit = rng.random(n_test) < p
                    if metric == "mean_f1":
                        pred = np.where(rng.random((n_test, N_TRAITS)) < p, traits, ~traits).astype(int)
                        truth = traits.astype(int)
                        scores = (pred == truth).mean(axis=1)
                        score = float(stats.multilabel_mean_f1(truth, pred))
                        infos = [f'{{"label":{json.dumps(a.tolist())},"pred":{json.dumps(b.tolist())}}}' for a, b in zip(truth, pred)]
                    else:
                        pred = np.where(hit, y, (y + rng.integers(1, N_CLASSES, size=n_test)) % N_CLASSES)
                        scores = (pred == y).astype(float)
                        score = {
                            "accuracy": lambda: float(scores.mean()),
                            "macro_f1": lambda: float(stats.macro_f1(y, pred)),
                            "mean_per_class_accuracy": lambda: float(stats.mean_per_class_accuracy(y, pred)),
                        }[metric]()
                        if clustered:
                            infos = [f'{{"label":{a},"pred":{b},"group":"g{g}"}}' for a, b, g in zip(y, pred, groups)]
                        else:
                            infos = [f'{{"label":{a},"pred":{b}}}' for a, b in zip(y, pred)]
                    exp_id += 1
                    conn.execute(
                        "INSERT INTO experiments (id, task, model_org, model_ckpt, method, n_train, n_train_actual, seed, protocol, "
                        "metric, score, ci_low, ci_high, n_test, sub_scores, config, argv, git_commit, package_versions, host, "
                        "posix_time) VALUES (?, ?, ?, ?, 'cvml', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', '[]', 'abc1234', ?, 'bench', ?)",
                        (exp_id, task, "gen", f"m{m:02d}", n_train, size, seed, f"{task}/v1", metric, score, score - 0.02,
                         score + 0.02, n_test, json.dumps({"part": {"a": {metric: score, "n_test": n_test}}}), versions,
                         1.7e9 + exp_id),
                    )  # fmt: skip
                    conn.executemany(
                        "INSERT INTO predictions (experiment_id, example_id, score, info) VALUES (?, ?, ?, ?)",
                        zip([exp_id] * n_test, ids, scores.tolist(), infos),
                    )
                    # What Store.write keeps beside the rows: the packed arrays the report reads.
                    conn.execute(
                        "INSERT INTO prediction_arrays (experiment_id, n, ids_digest, scores, label, pred, grp) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        packed_row(exp_id, ids, scores.tolist(), infos),
                    )
        print(f"generated {task} ({metric}{', clustered' if clustered else ''})", flush=True)
    conn.execute("COMMIT")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--n-train", type=int, default=5, help="n_train values per task (the last is 'all')")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--store", type=Path, default=None, help="where the generated store is cached")
    args = parser.parse_args()
    n_trains = [2**k for k in range(1, args.n_train)] + [-1]
    store = args.store or Path(f"/tmp/biobench-report-bench-{args.models}x{args.tasks}x{args.n_train}x{args.seeds}x{args.n_test}-v2.sqlite")
    if not store.exists():
        start = time.perf_counter()
        tmp = store.with_suffix(".partial")
        tmp.unlink(missing_ok=True)
        generate(tmp, args.models, args.tasks, n_trains, args.seeds, args.n_test)
        tmp.rename(store)
        print(f"generated {store} in {time.perf_counter() - start:.0f} s")

    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def stage(name, fn):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        seconds[name] = round(time.perf_counter() - start, 3)
        cpu[name] = round(time.process_time() - start_cpu, 3)
        return out

    rows = stage("read experiments", lambda: report.load(store))
    board = stage("leaderboard (predictions, bootstraps, tests, mean)", lambda: report.build(rows, store))
    seconds.update({f"  {k}": round(v, 3) for k, v in board.seconds.items()})
    html = stage("html", lambda: report.to_html(rows, board))
    stage("json", lambda: report.to_json(rows, board))
    stage("csv", lambda: report.to_csv(rows, board))
    stage("table", lambda: report.to_table(rows, board))
    untested = [(c.task, k, c.note or c.cells[k].note) for c in board.columns for k in c.cells if c.cells[k].tied is None]
    if untested:
        print(f"{len(untested)} cells without paired tests, e.g. {untested[:3]}")
    total = sum(v for k, v in seconds.items() if not k.startswith(" "))
    print(f"{'stage':<52} {'wall':>9} {'cpu':>9}")
    for k, v in seconds.items():
        print(f"{k:<52} {v:7.2f} s" + (f" {cpu[k]:7.2f} s" if k in cpu else ""))
    print(f"{'total':<52} {total:7.2f} s {sum(cpu.values()):7.2f} s  ({len(rows)} experiments, {len(board.columns)} columns, {len(board.rows)} models, "
          f"html {len(html) / 1e6:.1f} MB)")  # fmt: skip
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "total": round(total, 3), "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
