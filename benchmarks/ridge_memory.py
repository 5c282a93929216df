"""Peak memory of the ridge probe at iNat21 size: 500k x 768 float32 features, 10,000 classes.

Generates class-clustered float32 features (train and test), then fits the ridge probe
through the probe route (`biobench.routes.probe.evaluate`, as `biobench run` does: seeded
sampling, the probe's alpha search by 5-fold CV over 2 ** arange(-15, 5), prediction of
the test rows, the metric and its interval) and prints the process's peak resident set
size (RSS) and the seconds taken. The iNat21 proof: peak RSS below 8 GiB.

What is counted: the features themselves (500k + 100k rows x 768 float32 = 1.7 GiB) are
part of the peak, as they are in a real run; the line `ridge_extra_gib` is the peak minus
the RSS just before the fit (the ridge's and the route's own memory).

    python benchmarks/ridge_memory.py                                  # iNat21 size (minutes)
    python benchmarks/ridge_memory.py --n 20000 --d 64 --classes 500   # quick
    python benchmarks/ridge_memory.py --probe-only                     # Ridge probe, no route

The last line is one JSON object: {"n", "d", "classes", "n_test", "peak_rss_gib",
"before_fit_rss_gib", "ridge_extra_gib", "data_gib", "seconds", "alpha", "accuracy"}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time
from pathlib import Path

import numpy as np
import polars as pl

GIB = 1024**3
NOISE = 3.0
"""Per-feature noise around the class centres (unit normal): classes overlap, so alpha matters."""


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since the last `reset_peak()` (Linux VmHWM), else since it started (ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> None:
    """Start the peak over from the current RSS (Linux >= 4.0), so a peak while generating the data
    (freed before the fit) is not counted as the fit's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def generate(n: int, n_test: int, d: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n training then n_test test float32 rows around per-class centres, each split class-balanced (as iNat21's).

    Written in place in chunks, so generating costs no more than the features themselves.
    """
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(size=(n_classes, d)).astype(np.float32)
    scale = np.random.default_rng(54321).uniform(0.5, 2.0, size=d).astype(np.float32)
    y = np.concatenate([rng.permutation(np.arange(m) % n_classes) for m in (n, n_test)])
    x = np.empty((n + n_test, d), dtype=np.float32)
    for lo in range(0, len(y), 65_536):
        hi = min(len(y), lo + 65_536)
        rng.standard_normal(out=x[lo:hi], dtype=np.float32)
        x[lo:hi] *= NOISE * scale
        x[lo:hi] += centres[y[lo:hi]]
    return x, y


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500_000, help="training rows")
    parser.add_argument("--d", type=int, default=768, help="feature dimension")
    parser.add_argument("--classes", type=int, default=10_000, help="classes")
    parser.add_argument("--n-test", type=int, default=None, help="test rows (default n / 5)")
    parser.add_argument("--log2-alpha", type=int, nargs=2, default=(-15, 5), help="alpha grid 2 ** arange(LO, HI)")
    parser.add_argument("--balanced", action="store_true", help="balanced class weights (Pl@ntNet's ridge)")
    parser.add_argument("--probe-only", action="store_true", help="call the Ridge probe directly, not the probe route")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_test = args.n // 5 if args.n_test is None else args.n_test

    # Imported before the "before" reading: the libraries' own memory is not the fit's.
    import sklearn.model_selection  # noqa: F401
    import torch  # noqa: F401

    import biobench.probes.ridge  # noqa: F401
    from biobench.evaluation import EvalContext
    from biobench.examples import Examples
    from biobench.images import ImageSet
    from biobench.metrics import ACCURACY
    from biobench.probes import Ridge
    from biobench.routes import probe as probe_route
    from biobench.tasks.spec import TaskSpec

    x, y = generate(args.n, n_test, args.d, args.classes, args.seed)
    # Train rows first, then test rows, as the class-folder reader lists them.
    split = np.where(np.arange(len(y)) < args.n, "train", "test")
    probe = Ridge(class_weight="balanced" if args.balanced else None, log2_alpha=tuple(args.log2_alpha))
    reset_peak()
    before = rss_bytes()
    start = time.perf_counter()
    if args.probe_only:
        out = probe(x[: args.n], y[: args.n], x[args.n :], seed=args.seed)
        accuracy, alpha = float(np.mean(out.labels == y[args.n :])), out.params["alpha"]
    else:
        ids = [str(i) for i in range(len(y))]
        images = ImageSet("ridge-memory", ids, [Path(".")] * len(y))
        table = pl.DataFrame({"id": ids, "image": np.arange(len(y)), "label": y, "split": split})
        examples = Examples(images, table)
        spec = TaskSpec("ridge-memory", 1, "", _Options, lambda o: examples, lambda *a, **k: None, probe=probe, metric=ACCURACY)
        report = probe_route.evaluate(spec, _Options(Path(".")), examples, x, EvalContext(seed=args.seed, n_bootstrap=100))
        accuracy, alpha = report.score, report.sub_scores["probe"]["params"]["alpha"]
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    result = {
        "n": args.n, "d": args.d, "classes": args.classes, "n_test": n_test,
        "peak_rss_gib": round(peak / GIB, 3), "before_fit_rss_gib": round(before / GIB, 3),
        "ridge_extra_gib": round((peak - before) / GIB, 3), "data_gib": round(x.nbytes / GIB, 3),
        "seconds": round(seconds, 1), "alpha": alpha, "accuracy": round(accuracy, 4),
    }  # fmt: skip
    print(f"peak RSS {result['peak_rss_gib']:.2f} GiB (features {result['data_gib']:.2f} GiB, "
          f"{result['ridge_extra_gib']:.2f} GiB above the RSS before the fit); {seconds:.1f} s; "
          f"alpha {alpha:g}, test accuracy {accuracy:.3f}")  # fmt: skip
    print(json.dumps(result))
    return result


@dataclasses.dataclass(frozen=True)
class _Options:
    """The synthetic task's options (the route only passes them on)."""

    data: Path


if __name__ == "__main__":
    main()
