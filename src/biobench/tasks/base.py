"""What a task module provides, and what it returns.

A task module reads like a recipe: its data layout, its splits, its probe, its metric
and its citation. It exposes

- `NAME` (registry name, the same as its `[data]` key) and `VERSION` (bumped whenever
  the protocol changes what a score means),
- `Config`, a frozen dataclass: `data` (the dataset directory) plus the task's knobs,
  read from the config file's `[NAME]` table,
- `image_set(cfg) -> ImageSet`: every image the task needs embedded,
- `evaluate(cfg, images, features, ctx) -> TaskReport`: probe + metric for one
  (n_train, seed), given features row-aligned with `image_set`,
- optionally `evaluate_mllm(cfg, client, ctx) -> TaskReport`: the same task answered by a
  multimodal LLM (`biobench.mllm`), with `ctx.n_train` in-context examples,
- `make_fixture(dir, *, seed, shuffle_labels)`: a small generated dataset in the real
  on-disk format, with a learnable signal,
- `download(dir)`: fetch and lay out the real dataset.

Tasks never load models or touch the results database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from jaxtyping import Float

from biobench.images import ImageSet

DEBUG_N_TEST = 10
"""Test examples per sub-task when `debug` is on."""


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """What varies between experiments on the same features."""

    n_train: int = -1
    """Training examples requested; -1 = all. What it counts (per task, per class) is the task's to say."""
    seed: int = 0
    """Seeds training-set sampling, hyper-parameter search and the bootstrap."""
    n_bootstrap: int = 1000
    """Bootstrap resamples for confidence intervals."""
    n_jobs: int = 1
    """Worker processes a task may use for its probes."""
    debug: bool = False
    """MLLM runs: send only the first `DEBUG_N_TEST` test images of each sub-task."""


@dataclasses.dataclass(frozen=True)
class TaskReport:
    """One experiment's outcome, as a task computes it."""

    metric: str
    """Name of the headline metric, e.g. 'accuracy'."""
    score: float
    ci_low: float | None
    ci_high: float | None
    n_train_actual: int
    """Training examples actually used (the largest count of any sub-task)."""
    example_ids: Sequence[str]
    example_scores: Float[np.ndarray, " n"]
    """Per-example score; the metric is a function of these."""
    example_info: Sequence[dict]
    """Per-example details: true label, prediction, sub-task, cluster..."""
    sub_scores: dict = dataclasses.field(default_factory=dict)
    seconds_fit: float = 0.0
    seconds_score: float = 0.0
    cost_usd: float | None = None
    """MLLM runs: what the answers cost (from the provider's token counts and the model's prices)."""
    n_failed: int | None = None
    """MLLM runs: test examples whose request failed for good (scored as wrong; reasons in their info)."""
    parse_rate: float | None = None
    """MLLM runs: share of answers that named a class clearly (bold, or exactly one class name)."""

    @property
    def n_test(self) -> int:
        return len(self.example_ids)


class TaskModule(Protocol):
    NAME: str
    VERSION: int
    CITATION: str
    Config: type

    def image_set(self, cfg) -> ImageSet: ...

    def evaluate(self, cfg, images: ImageSet, features: np.ndarray, ctx: EvalContext) -> TaskReport: ...

    def make_fixture(self, root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None: ...

    def download(self, root: Path) -> None: ...


def protocol_id(name: str, version: int, cfg) -> str:
    """`NAME/vVERSION`, plus a short hash of any knob changed from its default.

    The protocol is part of the experiment key: a run with different task filters is a
    different experiment and must not be skipped as done.
    """
    changed = {}
    for f in dataclasses.fields(cfg):
        if f.name == "data":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        value = getattr(cfg, f.name)
        if value != default:
            changed[f.name] = value
    base = f"{name}/v{version}"
    if not changed:
        return base
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True, default=list).encode()).hexdigest()[:10]
    return f"{base}+{digest}"
