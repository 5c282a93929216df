"""The Python API: `biobench.evaluate(model=..., task=..., data=...)`, one experiment, in process."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from biobench.backbones import VisionBackbone
from biobench.config import Config, Experiment, Model, Settings, missing_data
from biobench.errors import ConfigError
from biobench.runner import execute, plan
from biobench.store import Report, Store
from biobench.tasks import get_task


def evaluate(
    model: str | Model | VisionBackbone,
    task: str,
    data: str | Path,
    *,
    n_train: int = -1,
    seed: int = 0,
    options: Mapping[str, object] | None = None,
    db: str | Path | None = None,
    **settings,
) -> Report:
    """Evaluate one model on one task and return the Report.

    Args:
        model: `ORG:CKPT` (e.g. "open-clip:ViT-B-16/openai"), a `Model`, or a backbone instance.
        task: Registry name, e.g. "newt".
        data: The task's dataset directory.
        n_train: Training examples (-1 = all).
        seed: Seeds sampling, search and bootstrap.
        options: Task options, as in the config file's task table (e.g. {"include_clusters": ("appearance",)}).
        db: If given, the results database (file) to also store the Report in.
        **settings: Any `biobench.config.Settings` field (device, cache_dir, batch_size, n_workers, n_jobs, n_bootstrap, ...).
    """
    backbone = None
    if isinstance(model, VisionBackbone):
        backbone = model
        model = Model(backbone.org or "custom", backbone.ckpt or type(backbone).__name__)
    elif isinstance(model, str):
        model = Model.parse(model)
    get_task(task)
    data = Path(data).expanduser().resolve()
    if not data.is_dir():
        raise ConfigError(f"{task} data: {missing_data(task, data)}")
    unknown = set(settings) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise ConfigError(f"evaluate() got unknown setting(s) {', '.join(sorted(unknown))}.")
    if "cache_dir" in settings and settings["cache_dir"] is not None:
        settings["cache_dir"] = Path(settings["cache_dir"])
    cfg = Config(
        experiments=(Experiment(model, n_train, seed),),
        data={task: data},
        task_options={task: dict(options or {})},
        settings=Settings(**settings),
    )
    (planned,) = [p for p in plan(cfg) if p.task == task]
    if backbone is not None:
        backbone = backbone.to(cfg.settings.resolved_device())
    (report,) = execute(model, task, [planned.experiment], cfg, [planned.key], backbone=backbone)
    if db is not None:
        with Store(db) as store:
            store.write(report)
    return report
