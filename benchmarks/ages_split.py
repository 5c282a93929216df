"""Ages' three SVM searches over 2 workers: one setting per worker job (before) vs by (setting, fold) (now).

Three 12-class problems at Ages' size (~800 training, ~500 test images per setting, d = 768,
L2-normalised class centroids plus noise), NeWT's 100-draw, 5-fold search. Reference: what
the probe route did before, `joblib.Parallel(n_jobs)` over the three settings (so one worker
runs two); new: `svm.fit_predict_many` (`Svm.fit_many`), which spreads the 15 fold searches
and then the 3 refits. Same process; choices and predictions must be identical.

    python benchmarks/ages_split.py [--jobs 2] [--n-train 800] [--draws 100] [--repeats 1]
"""

from __future__ import annotations

import argparse
import time

import joblib
import numpy as np

from biobench.probes import svm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--draws", type=int, default=svm.N_DRAWS)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(12, 768))
    problems = []
    for _ in range(3):
        y = rng.integers(0, 12, args.n_train + args.n_test)
        x = centroids[y] + 6 * rng.normal(size=(len(y), 768))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        problems.append((x[: args.n_train], y[: args.n_train], x[args.n_train :]))
    kwargs = {"seed": 0, "n_draws": args.draws, "min_per_class": 5}
    ref_s, new_s = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ref = joblib.Parallel(n_jobs=min(args.jobs, 3))(joblib.delayed(svm._fit_predict_chunk)([p], kwargs) for p in problems)
        ref = [r[0] for r in ref]
        ref_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        new = svm.fit_predict_many(problems, n_jobs=args.jobs, **kwargs)
        new_s.append(time.perf_counter() - t0)
        for (rp, rc), (np_, nc) in zip(ref, new):
            assert rc == nc and np.array_equal(rp, np_), "choices or predictions differ"
    print(f"3 settings x {args.n_train} train, 12 classes, {args.draws} draws, {args.jobs} workers: identical choices and predictions")
    print(f"per-setting jobs {min(ref_s):.1f} s   by fold {min(new_s):.1f} s   ratio {min(ref_s) / min(new_s):.2f}x")


if __name__ == "__main__":
    main()
