"""NeWT's SVM search at real NeWT shape: the batched search (`biobench.probes.search`) against the seed way.

The seed way is one `RandomizedSearchCV(make_pipeline(StandardScaler(), SVC()), search_space(),
n_iter=100, cv=5, random_state=seed)` per task, refit included (what small_data_metrics and
the original biobench ran). It runs on the first `--ref-tasks` tasks; its time is
extrapolated to all tasks (tasks cost about the same: same shape) and marked so. The
batched search runs every task in one call (`svm.fit_predict_many`, what the probe route
calls), on each device of `--devices`.

Features are generated NeWT-shaped: per task 110 train / 110 test images (NeWT: 164 tasks,
36k images), d = 768, binary, one informative direction of random strength, L2 / centre /
L2 as the NeWT recipe preprocesses them.

Prints per device: seconds (all tasks), seconds per task, the ratio to the seed way, and on
the reference subset how many tasks chose the same parameters and predicted the same test
labels, and the pooled accuracy of both. The last line is one JSON object.

    python benchmarks/newt_search.py [--tasks 164] [--ref-tasks 6] [--devices cpu,cuda] [--threads 1]

Threads: one by default. On a machine shared with other work, multi-threaded BLAS and
torch on these small arrays slow down many-fold (threads wait on each other); libsvm, and
so the seed way, is single-threaded.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
import torch


def newt_like(seed: int, n_train: int, n_test: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One NeWT-shaped binary task (features already as the NeWT recipe preprocesses them)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = (rng.permutation(n) < n // 2).astype(np.int64)
    w = rng.normal(size=d)
    x = rng.normal(size=(n, d)) + rng.uniform(0.3, 2.5) * np.outer(2 * y - 1, w / np.linalg.norm(w)) + rng.normal(size=d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x -= x[:n_train].mean(0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def seed_way(x, y, x_test, seed: int) -> tuple[np.ndarray, dict]:
    import sklearn.model_selection
    import sklearn.pipeline
    import sklearn.preprocessing
    import sklearn.svm

    from biobench.probes import svm

    search = sklearn.model_selection.RandomizedSearchCV(
        sklearn.pipeline.make_pipeline(sklearn.preprocessing.StandardScaler(), sklearn.svm.SVC()),
        svm.search_space(), n_iter=svm.N_DRAWS, cv=svm.N_FOLDS, random_state=seed,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(x, y)
    return search.predict(x_test), {k: (v.item() if isinstance(v, np.generic) else v) for k, v in search.best_params_.items()}


def main() -> None:
    from biobench.probes import svm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=164)
    parser.add_argument("--ref-tasks", type=int, default=6, help="tasks the seed way runs on (extrapolated to --tasks)")
    parser.add_argument("--n-train", type=int, default=110)
    parser.add_argument("--n-test", type=int, default=110)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--devices", default="cpu", help="comma-separated; cuda is skipped when there is no GPU")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and BLAS threads (0: their defaults); the seed way is single-threaded"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        import threadpoolctl

        threadpoolctl.threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)
    tasks = [newt_like(1000 + t, args.n_train, args.n_test, args.dim) for t in range(args.tasks)]
    n_ref = min(args.ref_tasks, args.tasks)
    print(
        f"{args.tasks} tasks x ({args.n_train} train, {args.n_test} test) x d={args.dim}; cores {os.cpu_count()}, torch threads {torch.get_num_threads()}"
    )

    start = time.perf_counter()
    ref = [seed_way(x, y, xt, args.seed) for x, y, xt, _ in tasks[:n_ref]]
    ref_per_task = (time.perf_counter() - start) / max(n_ref, 1)
    ref_total = ref_per_task * args.tasks
    print(f"seed way: {ref_per_task:.2f} s per task on {n_ref} tasks; all {args.tasks} tasks {ref_total:.0f} s (extrapolated)")

    result = {"tasks": args.tasks, "ref_tasks": n_ref, "seed_s_per_task": ref_per_task, "seed_total_s_extrapolated": ref_total}
    for device in args.devices.split(","):
        if device.startswith("cuda") and not torch.cuda.is_available():
            print(f"{device}: no GPU here, skipped")
            continue
        svm.fit_predict_many([t[:3] for t in tasks[:1]], seed=args.seed, device=device)  # warm-up (imports, CUDA context)
        stats: dict = {}
        start = time.perf_counter()
        ours = svm.fit_predict_many([t[:3] for t in tasks], seed=args.seed, device=device, stats=stats)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        total = time.perf_counter() - start
        same = sum(p == rp and np.array_equal(pred, rpred) for (pred, p), (rpred, rp) in zip(ours, ref))
        acc_ours = np.mean([np.mean(pred == t[3]) for (pred, _), t in zip(ours[:n_ref], tasks)])
        acc_ref = np.mean([np.mean(pred == t[3]) for (pred, _), t in zip(ref, tasks)])
        ratio = ref_total / total
        print(
            f"{device}: {total:.1f} s for {args.tasks} tasks ({total / args.tasks:.3f} s per task); {ratio:.1f}x the seed way; "
            f"same choice and predictions on {same}/{n_ref} reference tasks; accuracy {100 * acc_ours:.2f} vs {100 * acc_ref:.2f}; "
            f"{stats['problems']} problems, {stats['solved']} solved, {stats['uncertain']} uncertain predictions, "
            f"{stats['resolved']} re-solved by libsvm"
        )
        result[device] = {"s": total, "s_per_task": total / args.tasks, "ratio": ratio, "same": same, **stats}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
