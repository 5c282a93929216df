"""What one experiment is given (`EvalContext`) and what a route returns (`TaskReport`).

Plain data, shared by the routes (`biobench.routes`), the MLLM loop and custom task
evaluations; it imports nothing heavy, so every layer can depend on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

DEBUG_N_TEST = 10
"""Test examples per sub-task when `debug` is on."""


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """What varies between experiments on the same features."""

    n_train: int = -1
    """Training examples requested; -1 = all. What it counts (per sub-task, per class) is the task's to say."""
    seed: int = 0
    """Seeds training-set sampling, hyper-parameter search and the bootstrap."""
    n_bootstrap: int = 1000
    """Bootstrap resamples for confidence intervals."""
    n_jobs: int = 1
    """Worker processes a route may use to fit sub-tasks' probes in parallel."""
    debug: bool = False
    """MLLM runs: send only the first `DEBUG_N_TEST` test images of each sub-task."""
    device: str = "cpu"
    """Where probes that use torch run."""


@dataclasses.dataclass(frozen=True)
class TaskReport:
    """One experiment's outcome, as a route computes it."""

    metric: str
    """Name of the headline metric, e.g. 'accuracy'."""
    score: float
    ci_low: float | None
    ci_high: float | None
    n_train_actual: int
    """Training examples actually used (the largest count of any sub-task)."""
    example_ids: Sequence[str]
    example_scores: Float[np.ndarray, " n"]
    """Per-example score (1/0 for a correct/wrong label, a probability for detectors)."""
    example_info: Sequence[dict]
    """Per-example details: true label, prediction, sub-task, cluster... enough to recompute any metric."""
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
