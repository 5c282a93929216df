"""Small CPU torch probes (FishNet's MLP, the herbarium19 / ecdysis linear head) under the thread policy.

Reference: today's code as it ran before the policy, i.e. torch's default intra-op threads
(`threads=torch.get_num_threads()`); new: `threads=None` (`biobench.probes.threads.choose`).
Same process, same data, same seed, alternating runs; the best of `--repeats` is kept.
Sizes are the suite's at `--scale 0.3` (FishNet ~28k examples, 9 traits; herbarium19 ~11k
examples, 204 classes), trained `--epochs` / `--steps` and scaled to the protocol's 100 epochs
/ 10,000 steps (constant cost per epoch / step). Predictions must be equal and probabilities
allclose (rtol 1e-5, atol 1e-6) between the two, else the script fails.

`--busy N` starts N spinning processes for the measurement (a shared machine, `--jobs` > 1),
and ends them after.

    python benchmarks/probe_threads.py [--busy 0] [--epochs 2] [--steps 40] [--repeats 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np
import torch

from biobench.probes import linear, mlp, threads


def _spin() -> None:
    while True:
        pass


def _time(fn) -> tuple[float, tuple]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=0, help="spinning processes to run alongside")
    parser.add_argument("--epochs", type=int, default=2, help="MLP epochs to time (protocol: 100)")
    parser.add_argument("--steps", type=int, default=40, help="linear-probe steps to time (protocol: 10,000)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fishnet-n", type=int, default=int(0.3 * 94_532))
    parser.add_argument("--herbarium-n", type=int, default=int(0.3 * 36_904))
    parser.add_argument("--herbarium-classes", type=int, default=int(0.3 * 683))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    d = 768
    xf = rng.normal(size=(args.fishnet_n, d)).astype(np.float32)
    yf = (xf[:, :9] + rng.normal(size=(args.fishnet_n, 9)) > 0).astype(np.int64)
    centroids = rng.normal(size=(args.herbarium_classes, d)).astype(np.float32)
    yh = rng.integers(0, args.herbarium_classes, args.herbarium_n)
    xh = (centroids[yh] + 2 * rng.normal(size=(args.herbarium_n, d))).astype(np.float32)
    mcfg = mlp.MlpConfig(epochs=args.epochs)
    lcfg = linear.LinearConfig(steps=args.steps)
    default = torch.get_num_threads()
    probes = {
        "fishnet mlp": (lambda t: mlp.fit_predict(xf, yf, xf[:2000], seed=0, cfg=mcfg, threads=t), 100 / args.epochs),
        "linear (herbarium19)": (lambda t: linear.fit_predict(xh, yh, xh[:2000], seed=0, cfg=lcfg, threads=t), 10_000 / args.steps),
    }
    for fn, _ in probes.values():  # warm-up (first-call costs are not the probe's)
        fn(1)
    spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    try:
        time.sleep(2 if args.busy else 0)
        print(f"cores={os.cpu_count()} torch default threads={default} busy={args.busy} load={os.getloadavg()[0]:.2f}")
        for name, (fn, factor) in probes.items():
            ref_s, new_s, chosen = [], [], None
            for _ in range(args.repeats):
                s, ref = _time(lambda: fn(default))
                ref_s.append(s)
                # the count the policy picks now (the same call fit_predict makes)
                chosen = threads.choose(1e12, default=default)
                s, new = _time(lambda: fn(None))
                new_s.append(s)
                assert np.array_equal(ref[0], new[0]), f"{name}: predictions differ between thread counts"
                np.testing.assert_allclose(ref[1], new[1], rtol=1e-5, atol=1e-6, err_msg=f"{name}: probabilities differ")
            r, n = min(ref_s) * factor, min(new_s) * factor
            print(
                f"{name:22s} reference {r:8.1f} s  policy {n:8.1f} s  (policy threads now: {chosen})  ratio {r / n:5.2f}x  (extrapolated to the protocol)"
            )
    finally:
        for p in spinners:
            p.kill()
            p.join()


if __name__ == "__main__":
    main()
