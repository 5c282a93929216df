"""Ridge memory: benchmarks/ridge_memory.py at a reduced size, and the probe route's feature handling for ridge.

The benchmark at its default size (500k x 768, 10,000 classes: iNat21) is the proof that a fit
stays under 8 GiB; here it runs at 30k x 32 with 3,000 classes, where scikit-learn's dense
N x C float64 target alone would be 0.67 GiB, and the fit must need less than half of that.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

from biobench.evaluation import EvalContext
from biobench.examples import Examples
from biobench.images import ImageSet
from biobench.probes import Predictions, Probe, Ridge
from biobench.routes import probe as probe_route
from biobench.tasks.spec import TaskSpec

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_runs_at_a_reduced_size_in_bounded_memory():
    n, d, classes = 30_000, 32, 3_000
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    args = ["--n", str(n), "--d", str(d), "--classes", str(classes), "--log2-alpha", "-1", "1"]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ridge_memory.py"), *args], env=env, capture_output=True,
                         text=True, timeout=600, check=True).stdout  # fmt: skip
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["n"], result["d"], result["classes"]) == (n, d, classes) and result["n_test"] == n // 5
    assert result["peak_rss_gib"] >= result["before_fit_rss_gib"] > 0
    dense_target_gib = n * classes * 8 / 2**30  # what scikit-learn allocates for Y alone
    assert result["ridge_extra_gib"] < 0.5 * dense_target_gib, result
    assert result["accuracy"] > 20 / classes  # it did fit something (chance: 1 / classes)


SEEN: list[tuple[np.ndarray, np.ndarray]] = []


@dataclasses.dataclass(frozen=True)
class RecordingRidge(Ridge):
    """Ridge that keeps the arrays the route hands it."""

    def __call__(self, x_train, y_train, x_test, *, seed, device="cpu") -> Predictions:
        SEEN.append((x_train, x_test))
        return super().__call__(x_train, y_train, x_test, seed=seed, device=device)


@dataclasses.dataclass(frozen=True)
class Options:
    data: Path


def run(features: np.ndarray, split: np.ndarray, labels: np.ndarray, probe=None, preprocess=()):
    ids = [str(i) for i in range(len(labels))]
    table = pl.DataFrame({"id": ids, "image": np.arange(len(ids)), "label": labels, "split": split})
    examples = Examples(ImageSet("t", ids, [Path(".")] * len(ids)), table)
    spec = TaskSpec("t", 1, "", Options, lambda o: examples, lambda *a, **k: None, probe=probe or RecordingRidge(), preprocess=preprocess)
    SEEN.clear()
    return probe_route.evaluate(spec, Options(Path(".")), examples, features, EvalContext(n_bootstrap=20))


def blobs(n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return (rng.normal(size=(3, d))[y] * 2 + rng.normal(size=(n, d))).astype(np.float32), y


def test_route_hands_ridge_views_of_float32_features_with_identical_results():
    x, y = blobs()
    split = np.where(np.arange(len(y)) < 90, "train", "test")  # train rows first, as the class-folder reader lists them
    report = run(x, split, y)
    ((x_train, x_test),) = SEEN
    assert x_train.dtype == x_test.dtype == np.float32
    assert np.shares_memory(x_train, x) and np.shares_memory(x_test, x)  # no copy of the features at all
    assert run(x.astype(np.float64), split, y).score == report.score  # the ridge converts in chunks: same answer
    interleaved = np.where(np.arange(len(y)) % 4 == 0, "test", "train")
    run(x, interleaved, y)
    ((x_train, _),) = SEEN
    assert x_train.dtype == np.float32 and not np.shares_memory(x_train, x)  # rows gathered, still no float64 copy


def test_route_still_gives_other_probes_and_preprocessing_a_float64_copy():
    x, y = blobs()
    split = np.where(np.arange(len(y)) < 90, "train", "test")
    run(x, split, y, preprocess=("l2",))
    ((x_train, _),) = SEEN
    assert x_train.dtype == np.float64 and not np.shares_memory(x_train, x)
    assert not Probe.any_float  # float64 copies unless a probe says it converts features itself


def test_rows_of_is_a_view_only_for_consecutive_rows():
    x = np.arange(20.0).reshape(10, 2)
    assert np.shares_memory(probe_route.rows_of(x, np.arange(3, 7)), x)
    for rows in (np.array([1, 2, 4]), np.array([3, 2, 1]), np.array([], dtype=np.int64)):
        got = probe_route.rows_of(x, rows)
        assert np.array_equal(got, x[rows]) and not np.shares_memory(got, x)
