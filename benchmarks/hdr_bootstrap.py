"""HDR challenge bootstrap: biobench's weighted, vectorised metric vs. scoring each resample with scikit-learn.

Run: `python benchmarks/hdr_bootstrap.py [--n-resamples 1000]`. Uses the real reference
`tests/data/hdr/ref_test.csv` (2,350 images) with random scores. The reference path is
what a seed-style implementation does: per resample, a threshold search over the sorted
non-hybrid scores with numpy and `sklearn.metrics.average_precision_score` per group. It
runs on a subset of resamples and is extrapolated. Prints seconds and the ratio, and
checks that both give the same challenge scores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import sklearn.metrics

from biobench import stats
from biobench.challenge import scoring
from biobench.tasks.hybrids import bootstrap, bootstrap_strata

REF = Path(__file__).parents[1] / "tests" / "data" / "hdr" / "ref_test.csv"


def reference_one(p: np.ndarray, y: np.ndarray, g: np.ndarray) -> dict:
    out = {}
    for name, members in (("A", g != scoring.MIMIC), ("mimic", g == scoring.MIMIC)):
        s, yy = p[members], y[members]
        neg = np.sort(s[yy == 0])
        t = neg[int(np.ceil(0.95 * len(neg))) - 1]
        out[name] = t
        out[f"{name}_ap"] = sklearn.metrics.average_precision_score(yy, s)
    major = (g == scoring.MAJOR) & (y == 1)
    minor = (g == scoring.MINOR) & (y == 1)
    mimic = (g == scoring.MIMIC) & (y == 1)
    recalls = [np.mean(p[major] > out["A"]), np.mean(p[minor] > out["A"]), np.mean(p[mimic] > out["mimic"])]
    for sub in (scoring.MAJOR, scoring.MINOR):
        m = g == sub
        sklearn.metrics.average_precision_score(y[m], p[m])
    return {"challenge_score": 0.0 if min(recalls) == 0 else 3 / sum(1 / r for r in recalls)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-resamples", type=int, default=1000)
    parser.add_argument("--n-reference", type=int, default=100, help="resamples the slow path actually runs")
    args = parser.parse_args()
    ref = scoring.read_reference(REF)
    y, g = ref.labels.astype(int), ref.groups
    p = np.random.default_rng(0).random(len(y)) + 0.5 * y
    start = time.perf_counter()
    reps = bootstrap(p, y, g, n_resamples=args.n_resamples, seed=0)
    ours = time.perf_counter() - start

    idx = next(stats.resample_indices(len(p), n_resamples=args.n_reference, seed=0, strata=bootstrap_strata(y, g)))
    start = time.perf_counter()
    slow = [reference_one(p[i], y[i], g[i])["challenge_score"] for i in idx]
    ref_s = (time.perf_counter() - start) * args.n_resamples / args.n_reference
    np.testing.assert_allclose(reps["challenge_score"][: args.n_reference], slow, atol=1e-12)
    print(f"n = {len(p)}, B = {args.n_resamples}")
    print(f"per-resample scikit-learn loop (extrapolated from {args.n_reference}): {ref_s:.2f} s")
    print(f"biobench vectorised (all 8 leaderboard metrics):   {ours:.2f} s")
    print(f"speedup: {ref_s / ours:.1f}x (challenge scores identical on the shared resamples)")


if __name__ == "__main__":
    main()
