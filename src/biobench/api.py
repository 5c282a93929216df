"""The Python API: `biobench.evaluate(model=..., task=..., data=...)`, one experiment, in process, any route."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from biobench.backbones import VisionBackbone
from biobench.config import Config, Experiment, Model, Settings, missing_data
from biobench.errors import ConfigError
from biobench.plan import plan
from biobench.plugins import load_plugins
from biobench.routes import mllm_reports, probe_reports
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
        model: `ORG:CKPT` (e.g. "open-clip:ViT-B-16/openai"), a `Model` (method="mllm" for a multimodal
            LLM, with its base_url, context_tokens, ...), or a backbone instance.
        task: Registry name, e.g. "newt".
        data: The task's dataset directory.
        n_train: Training examples (-1 = all); for an MLLM, in-context examples.
        seed: Seeds sampling, search and bootstrap.
        options: Task options, as in the config file's task table (e.g. {"include_clusters": ("appearance",)}).
        db: If given, the results database (file) to also store the Report in (MLLM answers are cached there too).
        **settings: Any `biobench.config.Settings` field (device, cache_dir, batch_size, n_workers, n_jobs, n_bootstrap, ...).
    """
    backbone = None
    if isinstance(model, VisionBackbone):
        backbone, model = model, instance_model(model)
    elif isinstance(model, str):
        model = Model.parse(model)
    unknown = set(settings) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise ConfigError(f"evaluate() got unknown setting(s) {', '.join(sorted(unknown))}.")
    for key in ("cache_dir", "report_to"):
        if settings.get(key) is not None:
            settings[key] = Path(settings[key])
    if "plugins" in settings:
        settings["plugins"] = tuple(settings["plugins"])
        load_plugins(settings["plugins"], Path.cwd())
    get_task(task)
    data = Path(data).expanduser().resolve()
    if not data.is_dir():
        raise ConfigError(f"{task} data: {missing_data(task, data)}")
    cfg = Config(
        experiments=(Experiment(model, n_train, seed),),
        data={task: data},
        task_options={task: dict(options or {})},
        settings=Settings(**settings),
    )
    (planned,) = [p for p in plan(cfg) if p.task == task]
    if planned.status == "no code":
        raise ConfigError(f"Task {task} has no {model.method} route; it supports {', '.join(get_task(task).routes)}.")
    examples = get_task(task).read(cfg.task_options_for(task))  # bad data fails before a model loads
    if model.method == "mllm":
        report = _evaluate_mllm(model, task, planned, cfg, db, examples)
    else:
        from biobench.routes import load_model

        device = cfg.settings.resolved_device()
        backbone = load_model(model, device) if backbone is None else backbone.to(device)
        (report,) = probe_reports(backbone, task, [planned.experiment], [planned.key], cfg, examples)
    if db is not None:
        with Store(db) as store:
            store.write(report)
    return report


def instance_model(backbone: VisionBackbone) -> Model:
    """The `Model` (and so the experiment key) of a backbone instance, named as a config would name it.

    A registered class is `ORG:CKPT` with the checkpoint it was built from (`MyNet("v7")` is
    `mine:v7`, exactly as `mine:v7` in a config); an unregistered one is `custom:CLASS/CKPT`.
    Without a known checkpoint the weights themselves name it (`#weights=DIGEST`), so two
    differently trained instances never share a key.
    """
    from biobench.backbones.base import registered_org, state_dict_digest

    cls = type(backbone)
    org = backbone.org or registered_org(cls)
    ckpt = backbone.ckpt
    if org is None:
        org, ckpt = "custom", f"{cls.__name__}/{ckpt}" if ckpt else cls.__name__
    if not backbone.ckpt and backbone.state_dict():  # (a weight-free backbone is its class)
        ckpt += f"#weights={state_dict_digest(backbone)[:12]}"
    return Model(org, ckpt, pretrained=getattr(backbone, "pretrained", True))


def _evaluate_mllm(model: Model, task: str, planned, cfg: Config, db, examples) -> Report:
    from biobench.mllm import registry
    from biobench.mllm.client import Client

    store = Store(db) if db is not None else None
    try:
        with Client(model, registry.resolve(model), cache=store) as client:
            (report,) = mllm_reports(client, task, [planned.experiment], [planned.key], cfg, examples)
    finally:
        if store is not None:
            store.close()
    return report
