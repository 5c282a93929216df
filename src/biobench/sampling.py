"""Seeded, class-balanced choice of training examples for small-data sweeps and few-shot repeats."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
from jaxtyping import Int


def task_rng(seed: int, name: str) -> np.random.Generator:
    """A generator for one sub-task that depends on the experiment seed and the sub-task's name only,
    so including or excluding other sub-tasks never changes this one's sample."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def balanced_sample(labels: Int[np.ndarray, " m"], n: int, rng: np.random.Generator) -> Int[np.ndarray, " k"]:
    """Indices of `min(n, m)` examples spread as evenly as possible over the classes.

    Each of the K classes (in sorted order) gets `n // K` examples and the last
    `n % K` classes one more, as in the NeWT small-data protocol (with two classes,
    class 0 gets n // 2 and class 1 the rest). A class with too few examples gives all
    it has and the shortfall goes to the classes that still have some. `n < 0` means
    all examples, in their original order (fold assignment in cross-validation depends
    on order, and the published protocol used the file's order). A sample is shuffled.
    """
    labels = np.asarray(labels)
    m = len(labels)
    if n < 0 or n >= m:
        return np.arange(m)
    classes = np.unique(labels)
    k = len(classes)
    quota = np.full(k, n // k)
    if n % k:
        quota[k - n % k :] += 1
    pools = [np.flatnonzero(labels == c) for c in classes]
    avail = np.array([len(p) for p in pools])
    take = np.minimum(quota, avail)
    short = n - take.sum()
    while short > 0:  # hand the shortfall to classes with spare examples, one at a time, in order
        for j in range(k):
            if short and take[j] < avail[j]:
                take[j] += 1
                short -= 1
    chosen = np.concatenate([rng.choice(pool, size=t, replace=False) for pool, t in zip(pools, take)])
    return rng.permutation(chosen)


def training_rows(labels: np.ndarray, rows: Int[np.ndarray, " m"], n_train: int, seed: int, name: str) -> Int[np.ndarray, " k"]:
    """The seeded class-balanced sample of `n_train` of `rows` for sub-task `name` (multi-hot labels: a uniform sample)."""
    strata = labels[rows] if labels.ndim == 1 else np.zeros(len(rows), dtype=np.int64)
    return rows[balanced_sample(strata, n_train, task_rng(seed, name))]


@dataclasses.dataclass(frozen=True)
class Repeats:
    """A few-shot protocol: `n` independent draws of `shots` training examples per class, each fitted and scored
    on the same test examples (Birds525). A task declares it with `TaskSpec.repeats`; the probe route runs it."""

    n: int = 100
    """Draws (repeats) of the training set."""
    shots: int = 1
    """Training examples per class in each draw (a class with fewer gives all it has)."""

    def __post_init__(self) -> None:
        if self.n < 1 or self.shots < 1:
            raise ValueError(f"Repeats need n >= 1 and shots >= 1, got n={self.n}, shots={self.shots}.")


def k_per_class(labels: Int[np.ndarray, " m"], k: int, rng: np.random.Generator) -> Int[np.ndarray, " j"]:
    """Indices of `min(k, count)` examples of every class, chosen uniformly without replacement, shuffled
    (k-shot splits: Rare Species' train set, each Birds525 draw)."""
    labels = np.asarray(labels)
    m = len(labels)
    order = np.lexsort((rng.random(m), labels))  # classes in order, a random order within each
    sorted_labels = labels[order]
    rank = np.arange(m) - np.searchsorted(sorted_labels, sorted_labels, side="left")  # position within its class
    return rng.permutation(order[rank < k])


def repeat_rows(labels: np.ndarray, rows: Int[np.ndarray, " m"], repeats: Repeats, seed: int, name: str) -> list[np.ndarray]:
    """The `repeats.n` k-shot draws from `rows` for sub-task `name`; draw r has its own generator
    (seed, "name/repeat r"), so draws do not depend on how many are made."""
    return [rows[k_per_class(labels[rows], repeats.shots, task_rng(seed, f"{name}/repeat {r}"))] for r in range(repeats.n)]
