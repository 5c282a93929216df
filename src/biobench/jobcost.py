"""What a Slurm job will cost, so jobs can be grouped and given time limits (`executor = "slurm"`).

Pure functions over numbers the launcher already has: a (model, task) job costs

    images to embed (not in the feature cache) x seconds per image + experiments x seconds per probe

plus one backbone load per model a submitted job runs. Seconds per image are measured where the
store holds earlier experiments of that backbone on this kind of device (their `seconds_embed`
over the images they embedded), else a default by device and backbone size (read from the
checkpoint name). Seconds per probe are measured from the task's stored experiments (their
`seconds_fit + seconds_score`), else `DEFAULT_PROBE_S`. Small jobs are packed, in plan order,
into one submitted job up to `[slurm] target_job_min`; each submitted job's time limit is its
estimate x `[slurm] time_safety`, rounded up to 5 minutes and clamped to
[`[slurm] min_time_min`, `[slurm] time_min`] (a job longer than the maximum is requeued and
resumes, as a pre-empted one does). Nothing here is random: the same inputs give the same jobs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Sequence

DEFAULT_PROBE_S = 30.0
"""Seconds per experiment (probe fit and scoring, with its bootstrap) of a task never measured."""

LOAD_S = 60.0
"""Seconds to start a job and load one backbone (paid once per model in a submitted job)."""

_SIZES = (  # checkpoint-name pattern -> seconds per image on a GPU (bf16, batched); CPU is CPU_FACTOR slower
    (r"(^|[^a-z])(g|giant|gigantic|bigG)([^a-z]|$)|vit-?g", 0.010),
    (r"(^|[^a-z])(h|huge)([^a-z]|$)|vit-?h", 0.005),
    (r"(^|[^a-z])(l|large)([^a-z]|$)|vit-?l|convnext_large", 0.002),
    (r"(^|[^a-z])(b|base)([^a-z]|$)|vit-?b|resnet-?50|convnext_base", 0.0007),
    (r"(^|[^a-z])(s|small|t|tiny)([^a-z]|$)|vit-?s|vit-?t|resnet-?18", 0.0003),
)
DEFAULT_GPU_S = 0.001
"""Seconds per image on a GPU for a backbone whose size the name does not tell."""
CPU_FACTOR = 50.0
"""How much slower a CPU embeds than a GPU (the defaults only; measured numbers are used as they are)."""


def device_kind(device: str) -> str:
    """cuda / mps / cpu: what a measurement on one device says about another."""
    return device.split(":")[0]


def default_s_per_image(ckpt: str, device: str) -> float:
    """Seconds per image for a backbone never measured on this kind of device: by size (from its name) and device."""
    name = ckpt.lower()
    gpu = next((s for pattern, s in _SIZES if re.search(pattern.lower(), name)), DEFAULT_GPU_S)
    return gpu if device_kind(device) == "cuda" else gpu * CPU_FACTOR


@dataclasses.dataclass(frozen=True)
class Measured:
    """What the store's experiments say about costs."""

    s_per_image: dict[tuple[str, str, str], float]
    """(model org, ckpt, device kind) -> seconds per embedded image (total seconds_embed / total images embedded)."""
    probe_s: dict[str, float]
    """task -> mean seconds per experiment of fitting and scoring."""


def measured(rows: Iterable[dict]) -> Measured:
    """Costs from `Store.rows()`: only experiments that embedded images count for seconds per image."""
    embed: dict[tuple[str, str, str], list[float]] = {}
    probe: dict[str, list[float]] = {}
    for row in rows:
        try:
            cfg = json.loads(row.get("config") or "{}")
        except (TypeError, ValueError):
            cfg = {}
        emb = cfg.get("embedding") or {}
        device = str((cfg.get("settings") or {}).get("device") or "cpu")
        n = int(emb.get("n_embedded") or 0)
        if n > 0 and row.get("seconds_embed"):
            acc = embed.setdefault((row["model_org"], row["model_ckpt"], device_kind(device)), [0.0, 0.0])
            acc[0] += float(row["seconds_embed"])
            acc[1] += n
        fit, score = row.get("seconds_fit"), row.get("seconds_score")
        if fit is not None or score is not None:
            probe.setdefault(row["task"], []).append(float(fit or 0.0) + float(score or 0.0))
    return Measured(
        {k: s / n for k, (s, n) in sorted(embed.items())},
        {t: sum(v) / len(v) for t, v in sorted(probe.items())},
    )


def s_per_image(costs: Measured, org: str, ckpt: str, device: str) -> float:
    return costs.s_per_image.get((org, ckpt, device_kind(device))) or default_s_per_image(ckpt, device)


def job_seconds(costs: Measured, org: str, ckpt: str, task: str, device: str, n_to_embed: int, n_experiments: int) -> float:
    """Estimated seconds of one (model, task) job, its backbone load excluded (see `LOAD_S`)."""
    return n_to_embed * s_per_image(costs, org, ckpt, device) + n_experiments * costs.probe_s.get(task, DEFAULT_PROBE_S)


def pack(seconds: Sequence[float], models: Sequence[object], target_s: float) -> list[list[int]]:
    """Indices of jobs (in plan order, model by model) grouped into submitted jobs of about `target_s` each.

    Consecutive jobs join the current group while its estimate (each job's seconds, plus `LOAD_S` per distinct
    model) stays within `target_s`; a job larger than that alone is a group of its own. `target_s` <= 0: one
    group per job."""
    groups: list[list[int]] = []
    total = 0.0
    for i, (s, m) in enumerate(zip(seconds, models, strict=True)):
        if groups and target_s > 0:
            extra = s + (0.0 if m in {models[j] for j in groups[-1]} else LOAD_S)
            if total + extra <= target_s:
                groups[-1].append(i)
                total += extra
                continue
        groups.append([i])
        total = s + LOAD_S
    return groups


def group_seconds(seconds: Sequence[float], models: Sequence[object]) -> float:
    """A submitted job's estimate: its jobs' seconds plus one backbone load per distinct model."""
    return sum(seconds) + LOAD_S * len(set(models))


def time_limit(seconds: float, safety: float, floor_min: int, max_min: int) -> int:
    """Minutes to ask for: `seconds` x `safety`, rounded up to 5 minutes, clamped to [floor_min, max_min]."""
    minutes = 5 * math.ceil(seconds * safety / 300.0)
    return max(min(floor_min, max_min), min(minutes, max_min))


def n_shards(n_images: int, shard_images: int) -> int:
    """Shards a task of `n_images` is split into, each of at most `shard_images` (a function of the set, so a rerun
    splits it the same way and finds the shards already embedded)."""
    return max(1, math.ceil(n_images / shard_images))
