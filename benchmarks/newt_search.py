"""NeWT's SVM search at real NeWT shape: `biobench.probes.svm` against the seed way.

The seed way is one `RandomizedSearchCV(make_pipeline(StandardScaler(), SVC()), search_space(),
n_iter=100, cv=5, random_state=seed)` per task, refit included (what small_data_metrics and
the original biobench ran), one process. It runs on the first `--ref-tasks` tasks; its time
is extrapolated to all tasks (tasks cost about the same: same shape) and marked so. Ours
runs every task through `svm.fit_predict_many` (libsvm called directly on per-fold Gram
matrices) over `--jobs` worker processes, which is what the probe route does with a task's
sub-tasks (`Svm.parallel`, `n_jobs`); worker start-up is included in its time.

Features are generated NeWT-shaped: per task 110 train / 110 test images (NeWT: 164 tasks,
36k images), d = 768, binary, one informative direction of random strength, L2 / centre /
L2 as the NeWT recipe preprocesses them.

Prints: seconds for all tasks and the ratio to the seed way; on the reference subset, how
many tasks chose the same parameters and predicted the same test labels, how many of the
(task, draw) mean CV accuracies differ at all from the seed's (float rounding of kernel
values is the only possible cause), how many tasks' best mean is tied between draws (the
first draw wins, as in the search), and the pooled accuracies. The last line is one JSON object.

    python benchmarks/newt_search.py [--tasks 164] [--ref-tasks 6] [--jobs 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np

from biobench.fixtures import newt_like_features


def seed_way(x, y, x_test, seed: int, n_draws: int = 100):
    """(test predictions, best params, the fitted RandomizedSearchCV)."""
    import sklearn.model_selection
    import sklearn.pipeline
    import sklearn.preprocessing
    import sklearn.svm

    from biobench.probes import svm

    search = sklearn.model_selection.RandomizedSearchCV(
        sklearn.pipeline.make_pipeline(sklearn.preprocessing.StandardScaler(), sklearn.svm.SVC()),
        svm.search_space(), n_iter=n_draws, cv=svm.N_FOLDS, random_state=seed,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(x, y)
    best = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in search.best_params_.items()}
    return search.predict(x_test), best, search


def main() -> None:
    import threadpoolctl

    from biobench.probes import svm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=164)
    parser.add_argument("--ref-tasks", type=int, default=6, help="tasks the seed way runs on (extrapolated to --tasks)")
    parser.add_argument("--n-train", type=int, default=110)
    parser.add_argument("--n-test", type=int, default=110)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes for ours (the seed way: one process)")
    parser.add_argument("--repeat", type=int, default=1, help="time ours this many times (the machine may be shared)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    threadpoolctl.threadpool_limits(1)  # libsvm is single-threaded; BLAS threads on 88 x 768 only contend
    tasks = [newt_like_features(1000 + t, args.n_train, args.n_test, args.dim) for t in range(args.tasks)]
    n_ref = min(args.ref_tasks, args.tasks)
    print(f"{args.tasks} tasks x ({args.n_train} train, {args.n_test} test) x d={args.dim}; {os.cpu_count()} cores, {args.jobs} jobs")

    load = os.getloadavg()[0]
    start, cpu = time.perf_counter(), time.process_time()
    ref = [seed_way(x, y, xt, args.seed) for x, y, xt, _ in tasks[:n_ref]]
    ref_per_task = (time.perf_counter() - start) / max(n_ref, 1)
    ref_cpu = (time.process_time() - cpu) / max(n_ref, 1)
    ref_total = ref_per_task * args.tasks
    print(
        f"seed way: {ref_per_task:.2f} s per task on {n_ref} tasks (CPU {ref_cpu:.2f} s); "
        f"all {args.tasks} tasks {ref_total:.0f} s (EXTRAPOLATED)"
    )
    start, cpu = time.perf_counter(), time.process_time()
    for x, y, xt, _ in tasks[:n_ref]:
        svm.fit_predict(x, y, xt, seed=args.seed)
    one_per_task, one_cpu = (time.perf_counter() - start) / max(n_ref, 1), (time.process_time() - cpu) / max(n_ref, 1)
    print(
        f"ours, one process: {one_per_task:.3f} s per task on the same {n_ref} (CPU {one_cpu:.3f} s): "
        f"{ref_per_task / one_per_task:.1f}x wall, {ref_cpu / one_cpu:.1f}x CPU time"
    )

    seconds = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        ours = svm.fit_predict_many([t[:3] for t in tasks], seed=args.seed, n_jobs=args.jobs)
        seconds.append(time.perf_counter() - start)
    total = min(seconds)
    same = sum(p == rp and np.array_equal(pred, rpred) for (pred, p), (rpred, rp, _) in zip(ours, ref))
    params = svm.draws(args.seed)
    differ = ties = 0
    for (x, y, _, _), (_, _, search) in zip(tasks, ref):
        means = svm.cv_scores(x, y, params)
        differ += int(np.sum(~np.isclose(means, search.cv_results_["mean_test_score"], rtol=0, atol=1e-12, equal_nan=True)))
        ties += int(np.sum(means == np.nanmax(means)) > 1)
    acc_ours = np.mean([np.mean(pred == t[3]) for (pred, _), t in zip(ours[:n_ref], tasks)])
    acc_ref = np.mean([np.mean(pred == t[3]) for (pred, _, _), t in zip(ref, tasks)])
    ratio = ref_total / total
    print(
        f"ours: {total:.1f} s for {args.tasks} tasks ({total / args.tasks:.3f} s per task; runs {', '.join(f'{s:.1f}' for s in seconds)}); "
        f"{ratio:.1f}x the seed way (extrapolated); same choice and predictions on {same}/{n_ref} reference tasks; "
        f"{differ}/{n_ref * len(params)} draw means differ from the seed's; best mean tied between draws on {ties}/{n_ref} tasks; "
        f"accuracy {100 * acc_ours:.2f} vs {100 * acc_ref:.2f}; load average {load:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    result = {
        "tasks": args.tasks, "ref_tasks": n_ref, "jobs": args.jobs, "seed_s_per_task": ref_per_task,
        "seed_total_s_extrapolated": ref_total, "seed_cpu_s_per_task": ref_cpu, "one_process_s_per_task": one_per_task,
        "one_process_cpu_s_per_task": one_cpu, "cpu_ratio": ref_cpu / one_cpu, "ours_s": total, "ours_runs_s": seconds, "ratio": ratio, "same": same,
        "draw_means_differ": differ, "tied_best": ties,
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
