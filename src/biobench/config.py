"""Run configuration: TOML in, a validated grid of experiments out.

```toml
report_to = "results"            # results database at results/results.sqlite
n_train = [4, 16, -1]            # every list-valued top-level key is a grid axis
seeds = [0, 1, 2]

[[models]]
org = "open-clip"
ckpt = "ViT-B-16/openai"

[[models]]
org = "builtin"
ckpt = "pixel-stats"

[data]                           # task name -> dataset directory; absent or "" = skip
newt = "/data/newt"

[newt]                           # task options
include_clusters = ["appearance"]

[tasks.mybirds]                  # your own dataset as a task, no code (biobench.tasks.user)
layout = "folders"
data = "data/mybirds"
probe = "ridge"
metric = "accuracy"
```

Relative paths are resolved against the config file's directory, so a config means the
same thing wherever it is launched from. Every mistake (malformed TOML, unknown key,
wrong type, missing dataset directory) is a `ConfigError` naming the file, the key and,
where it can be found, the line.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from biobench.errors import ConfigError
from biobench.mllm.settings import MLLM_ONLY, MllmSettings, check_mllm

Method = Literal["cvml", "mllm", "zero-shot"]


@dataclasses.dataclass(frozen=True)
class Model(MllmSettings):
    """A model to evaluate, `[[models]]` in a config (MLLM-only keys: `biobench.mllm.settings`)."""

    org: str
    """Backbone org (`biobench models` lists them: open-clip, timm, torchvision, builtin, ...), or the API provider for method = "mllm"."""
    ckpt: str
    """Checkpoint within the org, e.g. "ViT-B-16/openai", "hf-hub:imageomics/bioclip", "vit_base_patch14_reg4_dinov2.lvd142m", "pixel-stats"."""
    method: Method = "cvml"
    """"cvml": frozen image features + a probe; "mllm": a multimodal LLM prompted through an API; "zero-shot": a
    CLIP-style backbone's image and text towers, no training (the text route: zero-shot classification, retrieval,
    re-ranking; tasks without it, and backbones without a text tower, show "no code")."""
    pretrained: bool = True
    """Load pretrained weights; false builds a seeded random initialisation (baselines, offline tests)."""

    @property
    def key_ckpt(self) -> str:
        """The checkpoint as results record it: `ckpt`, marked `#random-init` when pretrained is false,
        and `#weights=DIGEST` when it names a local weights file, so random, pretrained and rewritten
        weights never share (or skip) a result."""
        if self.method == "mllm":
            return self.ckpt
        from biobench.weights import weights_tag

        return (self.ckpt if self.pretrained else f"{self.ckpt}#random-init") + weights_tag(self.ckpt, self.org)

    @property
    def name(self) -> str:
        return f"{self.org}:{self.key_ckpt}"

    @classmethod
    def parse(cls, spec: str, **kwargs) -> Model:
        """`ORG:CKPT` -> Model (the checkpoint may itself contain ':', as in `open-clip:hf-hub:org/repo`)."""
        org, sep, ckpt = spec.partition(":")
        if not sep or not org or not ckpt:
            raise ConfigError(f"Model '{spec}' is not of the form ORG:CKPT, e.g. open-clip:ViT-B-16/openai.")
        return cls(org, ckpt, **kwargs)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One point of the grid: a model, a training-set size and a seed (run on every task with data)."""

    model: Model
    """The model evaluated."""
    n_train: int = -1
    """Training examples per task (-1 = all); what it counts is each task's to say (NeWT: images per binary task)."""
    seed: int = 0
    """Seeds training-set sampling, hyper-parameter search and the bootstrap."""


def available_cpus() -> int:
    """CPU cores this process may run on: its affinity mask, which Slurm, taskset and containers restrict (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def default_workers() -> int:
    return min(8, available_cpus())


def default_decode_threads() -> int:
    """Image decode threads: one per available core (at most 32). They overlap the forward pass, which on CPU
    competes for the same cores; on a GPU machine they are what keeps the exact path fed."""
    return min(32, available_cpus())


Executor = Literal["local", "pool", "slurm"]


@dataclasses.dataclass(frozen=True)
class SlurmSettings:
    """The `[slurm]` table: how `executor = "slurm"` submits its jobs (through submitit; `biobench.executors`)."""

    partition: str | None = None
    """sbatch --partition; default: the cluster's default partition."""
    account: str | None = None
    """sbatch --account."""
    qos: str | None = None
    """sbatch --qos."""
    gpus_per_job: int = 1
    """GPUs per job (0 for CPU-only jobs)."""
    cpus_per_job: int = 8
    """CPUs per job (image decoding and probe fitting)."""
    mem_gb: int = 32
    """Memory per job, GB."""
    time_min: int = 30
    """The longest time limit a job asks for, minutes; a job that reaches it is requeued and resumes (see max_requeue).
    Each job's limit is its estimated cost x time_safety (`biobench.jobcost`), between min_time_min and this."""
    min_time_min: int = 10
    """The shortest time limit a job asks for, minutes."""
    time_safety: float = 2.0
    """A job's time limit is its estimated seconds times this (at least 1)."""
    target_job_min: int = 20
    """Small (model, task) jobs are packed into one submitted job of about this many estimated minutes; 0 = one job each."""
    shard_images: int = 200_000
    """A task with more images to embed than this is first embedded by shard jobs (at most this many images each), then evaluated."""
    constraint: str | None = None
    """sbatch --constraint, e.g. "a100"."""
    array_parallelism: int = 64
    """Jobs of one array running at once (sbatch --array=...%N)."""
    max_requeue: int = 3
    """Times a pre-empted or timed-out job is requeued before it counts as failed."""
    extra: tuple[str, ...] = ()
    """More sbatch options as "key=value" strings, e.g. ["mail-type=FAIL", "nice=10"]."""
    folder: Path | None = None
    """Job scripts, logs and result files; default REPORT_TO/jobs (must be on a filesystem the nodes share)."""
    cluster: Literal["slurm", "local"] = "slurm"
    """"local" runs the same submitit jobs as processes on this machine (tests, a machine without Slurm)."""
    poll_s: float = 5.0
    """Seconds between checks of job states while waiting."""

    def additional_parameters(self) -> dict[str, str]:
        out = {}
        for item in self.extra:
            key, sep, value = item.partition("=")
            out[key.strip().lstrip("-").replace("-", "_")] = value.strip() if sep else ""
        return out


@dataclasses.dataclass(frozen=True)
class Settings:
    """Run-wide settings: top-level scalar keys of a config file."""

    report_to: Path = Path("results")
    """Results directory; the database is REPORT_TO/results.sqlite."""
    cache_dir: Path | None = None
    """Feature cache; default $BIOBENCH_CACHE, else ~/.cache/biobench."""
    device: Literal["cpu", "cuda", "mps"] | None = None
    """Where backbones run; default cuda if available, else cpu."""
    batch_size: int | Literal["auto"] = "auto"
    """Images per forward pass: "auto" = the largest that fits (on CUDA from 1024 down, halving on out-of-memory; 32 on CPU),
    or a number (also halved on out-of-memory). The size used is stored with each result's timings."""
    n_workers: int = dataclasses.field(default_factory=default_decode_threads)
    """Threads reading, decoding and transforming images ahead of the forward pass (0 = in the main thread)."""
    decode: Literal["exact", "fast"] | None = None
    """Image preprocessing: "exact" (the backbone's own PIL transform) or "fast" (JPEG decode and transform as tensor ops,
    on the GPU under CUDA, within about one grey level of exact); default fast on CUDA, exact elsewhere. Part of the cache key."""
    channels_last: bool | None = None
    """Run the backbone on channels-last (NHWC) tensors; default: on CUDA for convolutional networks (more than a patch
    embedding), off otherwise. Recorded with each result; not part of the cache key (it changes only float rounding)."""
    compile: bool = False
    """Run the backbone through `torch.compile` (tens of seconds of compilation per model and batch size, paid back only on
    large image sets). Recorded with each result; not part of the cache key (it changes only float rounding)."""
    n_jobs: int = dataclasses.field(default_factory=default_workers)
    """Processes fitting probes in parallel (e.g. NeWT's 164 SVMs)."""
    n_bootstrap: int = 1000
    """Bootstrap resamples per confidence interval."""
    cache_keys: Literal["stat", "content"] = "stat"
    """How the cache recognises an image: "stat" (path, size, mtime) or "content" (hash of its bytes; survives moves, costs a read)."""
    plugins: tuple[str, ...] = ()
    """Modules or .py files to import before running, e.g. to register your own backbones."""
    debug: bool = False
    """Quick, cheap check: MLLM runs send only the first 10 test images of each sub-task (kept apart from full results)."""
    executor: Executor = "local"
    """Where cvml and zero-shot jobs run: "local" (this process), "pool" (worker processes here), "slurm" (submitit)."""
    pool_size: int = 0
    """Worker processes of executor = "pool": 0 = one per visible GPU (2 on CPU)."""
    slurm: SlurmSettings = dataclasses.field(default_factory=SlurmSettings)
    """The `[slurm]` table (executor = "slurm")."""

    def resolved_device(self) -> str:
        if self.device is not None:
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_cache_dir(self) -> Path:
        from biobench.cache import default_cache_dir

        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    @property
    def db_path(self) -> Path:
        return self.report_to / "results.sqlite"


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run: the experiment grid, the datasets, task options and settings."""

    experiments: tuple[Experiment, ...]
    """The grid: every model x every value of every list-valued key."""
    data: Mapping[str, Path]
    """Task name -> dataset directory, for tasks to run."""
    task_options: Mapping[str, Mapping[str, object]]
    """Task name -> options from its table (validated against the task's Config)."""
    settings: Settings = dataclasses.field(default_factory=Settings)
    """Run-wide settings (results directory, cache, device, batch size, ...)."""
    source: Path | None = None
    """The file this came from, for messages."""
    user_tasks: Mapping[str, Mapping[str, object]] = dataclasses.field(default_factory=dict)
    """The `[tasks.NAME]` tables as given: pool and Slurm workers register them again (a config built with
    `from_dict` has no file for them to read)."""
    base: Path | None = None
    """The folder relative paths (plugins, `[tasks.NAME]` data) were resolved against."""

    def task_options_for(self, name: str):
        """The task's frozen options for this run (data dir + its `[NAME]` table)."""
        from biobench.tasks import get_task

        return get_task(name).options(data=self.data[name], **self.task_options.get(name, {}))


GRID_AXES = {"n_train": "n_train", "seeds": "seed", "seed": "seed"}
"""Top-level keys that may hold lists (grid axes) -> Experiment field."""


def load(path: Path | str) -> Config:
    """Read, validate and expand a TOML config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"Cannot read config file {path}: {err}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    return from_dict(raw, source=path, text=text)


def from_dict(raw: Mapping[str, object], *, source: Path | None = None, text: str = "") -> Config:
    """Validate and expand an already-parsed config (as `load` does for a file).

    `plugins` are imported first, so the tasks and backbones they register are known
    when `[data]`, the task tables and `[[models]]` are checked.
    """
    from biobench import tasks
    from biobench.plugins import load_plugins

    where = _Where(source, text)
    raw = dict(raw)
    base = source.parent.resolve() if source is not None else Path.cwd()
    plugins = raw.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"{where.at('plugins')}: 'plugins' must be a list of module names or .py paths.")
    load_plugins(plugins, base)
    user_tasks = copy.deepcopy(raw.get("tasks", {}))
    declared = declare_tasks(raw, where, base)
    known_tasks = tasks.task_names()

    models_raw = raw.pop("models", None)
    if not isinstance(models_raw, list) or not models_raw or not all(isinstance(m, dict) for m in models_raw):
        raise ConfigError(f"{where.file}: needs at least one [[models]] table with org and ckpt.")
    models = [_build(Model, m, where, f"models[{i}]", base) for i, m in enumerate(models_raw)]
    for i, m in enumerate(models):
        _check_model(m, models_raw[i], where, f"models[{i}]")

    data_raw = raw.pop("data", {})
    if not isinstance(data_raw, dict):
        raise ConfigError(f"{where.at('data')}: 'data' must be a table mapping task name to dataset directory.")
    data: dict[str, Path] = {}
    for task, value in data_raw.items():
        if task not in known_tasks:
            raise ConfigError(
                f"{where.at(task, 'data')}: [data] names unknown task '{task}'{_suggest(task, known_tasks)}. Known tasks: {', '.join(known_tasks)}."
            )
        if not isinstance(value, str):
            raise ConfigError(f"{where.at(task, 'data')}: [data] {task} must be a directory path string, got {value!r}.")
        if not value:
            continue
        d = _resolve(value, base)
        if not d.is_dir():
            raise ConfigError(f"{where.at(task, 'data')}: [data] {task} = '{value}': {missing_data(task, d)}")
        data[task] = d
    data.update(_declared_data(declared, data_raw, where))

    task_options: dict[str, dict[str, object]] = {}
    for name in [k for k in raw if k in known_tasks]:
        table = raw.pop(name)
        if not isinstance(table, dict):
            raise ConfigError(f"{where.at(name)}: '{name}' must be a table of task options, [{name}].")
        task_cfg = tasks.get_task(name).options
        fields = {f.name: f for f in dataclasses.fields(task_cfg) if f.name != "data"}
        hints = typing.get_type_hints(task_cfg)
        opts = {}
        for key, value in table.items():
            if key not in fields:
                raise ConfigError(
                    f"{where.at(key, name)}: unknown option [{name}] {key}{_suggest(key, fields)}. Options: {', '.join(fields)}."
                )
            opts[key] = _coerce(value, hints[key], where.at(key, name), f"[{name}] {key}", base)
        task_options[name] = opts

    axes: dict[str, list] = {}
    for key in [k for k in raw if k in GRID_AXES]:
        value = raw.pop(key)
        field = GRID_AXES[key]
        if field in axes:
            raise ConfigError(f"{where.at(key)}: give either 'seed' or 'seeds', not both.")
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ConfigError(f"{where.at(key)}: '{key}' is an empty list; give at least one value.")
        checked = [_coerce(v, int, where.at(key), key, base) for v in values]
        if field == "n_train" and any(v == 0 or v < -1 for v in checked):
            raise ConfigError(f"{where.at(key)}: n_train values must be positive, or -1 for all; got {values}.")
        axes[field] = checked

    settings_fields = {f.name: f for f in dataclasses.fields(Settings) if f.name != "slurm"}
    hints = typing.get_type_hints(Settings)
    settings_kwargs: dict[str, object] = {}
    if "slurm" in raw:
        settings_kwargs["slurm"] = _slurm_settings(raw.pop("slurm"), where, base)
    for key, value in raw.items():
        if key not in settings_fields:
            known = sorted([*settings_fields, "slurm", *GRID_AXES, "models", "data", "tasks", *known_tasks])
            raise ConfigError(f"{where.at(key)}: unknown key '{key}'{_suggest(key, known)}. Known keys: {', '.join(known)}.")
        if isinstance(value, list) and typing.get_origin(hints[key]) is not tuple:
            raise ConfigError(f"{where.at(key)}: '{key}' is a run-wide setting and cannot be a list (grid axes: n_train, seeds).")
        settings_kwargs[key] = _coerce(value, hints[key], where.at(key), key, base)
    settings = Settings(**settings_kwargs)
    for key in ("batch_size", "n_jobs", "n_bootstrap"):
        if getattr(settings, key) != "auto" and getattr(settings, key) < 1:
            raise ConfigError(f"{where.at(key)}: '{key}' must be at least 1.")
    if settings.pool_size < 0:
        raise ConfigError(f"{where.at('pool_size')}: 'pool_size' must be 0 (one worker per visible GPU) or more.")
    if settings.n_workers < 0:
        raise ConfigError(f"{where.at('n_workers')}: 'n_workers' must be 0 or more.")
    if "report_to" not in settings_kwargs:
        settings = dataclasses.replace(settings, report_to=base / settings.report_to)

    names = list(axes)
    # dict.fromkeys drops repeats (a model listed twice, n_train = [4, 4]) and keeps order.
    experiments = tuple(
        dict.fromkeys(
            Experiment(model=m, **dict(zip(names, combo))) for m in models for combo in itertools.product(*(axes[n] for n in names))
        )
    )
    return Config(experiments, data, task_options, settings, source, user_tasks if isinstance(user_tasks, dict) else {}, base)


def _slurm_settings(table: object, where: _Where, base: Path) -> SlurmSettings:
    """The `[slurm]` table, each key checked and named in errors as `[slurm] KEY`."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where.at('slurm')}: 'slurm' must be a table, [slurm] (partition, account, gpus_per_job, time_min, ...).")
    fields = {f.name for f in dataclasses.fields(SlurmSettings)}
    hints = typing.get_type_hints(SlurmSettings)
    kwargs = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(
                f"{where.at(key, 'slurm')}: unknown key [slurm] {key}{_suggest(key, fields)}. Keys: {', '.join(sorted(fields))}."
            )
        kwargs[key] = _coerce(value, hints[key], where.at(key, "slurm"), f"[slurm] {key}", base)
    out = SlurmSettings(**kwargs)
    for key in ("cpus_per_job", "mem_gb", "time_min", "array_parallelism"):
        if getattr(out, key) < 1:
            raise ConfigError(f"{where.at(key, 'slurm')}: '[slurm] {key}' must be at least 1.")
    for key in ("min_time_min", "shard_images"):
        if getattr(out, key) < 1:
            raise ConfigError(f"{where.at(key, 'slurm')}: '[slurm] {key}' must be at least 1.")
    if out.time_safety < 1:
        raise ConfigError(f"{where.at('time_safety', 'slurm')}: '[slurm] time_safety' must be at least 1; got {out.time_safety}.")
    for key in ("gpus_per_job", "max_requeue", "target_job_min"):
        if getattr(out, key) < 0:
            raise ConfigError(f"{where.at(key, 'slurm')}: '[slurm] {key}' must be 0 or more.")
    if out.poll_s <= 0:
        raise ConfigError(f"{where.at('poll_s', 'slurm')}: '[slurm] poll_s' must be positive.")
    bad = [e for e in out.extra if "=" not in e]
    if bad:
        raise ConfigError(f"{where.at('extra', 'slurm')}: '[slurm] extra' entries must be \"key=value\" sbatch options; got {bad[0]!r}.")
    return out


def declare_tasks(raw: dict, where: _Where, base: Path) -> dict[str, Path | None]:
    """Pop the `[tasks.NAME]` tables (your own datasets, `biobench.tasks.user`), register each as a task; NAME -> its `data`."""
    from biobench.tasks import user

    tables = raw.pop("tasks", {})
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ConfigError(
            f"{where.at('tasks')}: 'tasks' holds one table per task of your own: [tasks.NAME] with layout, data, probe, metric."
        )
    out = {}
    for name, table in tables.items():
        if name in raw:
            raise ConfigError(
                f"{where.at(name)}: [{name}] and [tasks.{name}] are both given; put every key of your task in [tasks.{name}]."
            )
        decl = user.declare(
            name, table, base, at=lambda key, n=name: where.at(key, f"tasks.{n}") if key else where.at(f"tasks.{n}", "tasks")
        )
        out[name] = decl.data
    return out


def _declared_data(declared: Mapping[str, Path | None], data_raw: Mapping[str, object], where: _Where) -> dict[str, Path]:
    """The data directory of each declared task that [data] does not name (there, [data] wins; "" skips the task)."""
    out = {}
    for name, d in declared.items():
        if name in data_raw:
            continue
        if d is None:
            raise ConfigError(
                f"{where.at(f'tasks.{name}', 'tasks')}: [tasks.{name}] has no data; give data = DIR in it, or {name} = DIR under [data]."
            )
        if not d.is_dir():
            raise ConfigError(
                f"{where.at('data', f'tasks.{name}')}: [tasks.{name}] data: directory {d} does not exist; point it at your dataset."
            )
        out[name] = d
    return out


def data_dirs(path: Path | str) -> dict[str, Path | None]:
    """Task -> the dataset directory a config gives it (None: `""`, skipped), existing or not (`biobench tasks --config`).

    As `load`, it imports the config's plugins and registers its `[tasks.NAME]` tables; it checks nothing else.
    """
    path = Path(path)
    try:
        text = path.read_text()
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"Cannot read config file {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    from biobench.plugins import load_plugins

    where, base = _Where(path, text), path.parent.resolve()
    plugins = raw.get("plugins", [])
    load_plugins([p for p in plugins if isinstance(p, str)] if isinstance(plugins, list) else [], base)
    out: dict[str, Path | None] = {name: d for name, d in declare_tasks(raw, where, base).items() if d is not None}
    data_raw = raw.get("data", {})
    for task, value in (data_raw if isinstance(data_raw, dict) else {}).items():
        if isinstance(value, str):
            out[task] = _resolve(value, base) if value else None
    return out


def _check_model(m: Model, table: Mapping[str, object], where: _Where, name: str) -> None:
    """Range checks on one [[models]] entry, each naming file:line and the key."""

    def fail(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{where.at(key, 'models')}: {name}.{key} {msg}")

    if m.method != "mllm":
        stray = [k for k in MLLM_ONLY if k in table]
        if stray:
            raise fail(stray[0], 'applies only to method = "mllm" models; remove it or set method = "mllm".')
        return
    if not m.pretrained:
        raise fail("pretrained", 'must be true for method = "mllm" (an API model has no random initialisation).')
    problem = check_mllm(m)
    if problem is not None:
        raise fail(*problem)


def missing_data(task: str, path: Path) -> str:
    """What to say when a task's dataset directory does not exist."""
    return (
        f"directory {path} does not exist. Download the dataset with `biobench download {task} --dir {path}`, "
        f"or write a small generated copy with `biobench fixture {task} --dir {path}`."
    )


def _build(cls, table: Mapping[str, object], where: _Where, name: str, base: Path):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(
                f"{where.at(key, 'models')}: unknown key '{key}' in [[models]]{_suggest(key, fields)}. Keys: {', '.join(fields)}."
            )
        kwargs[key] = _coerce(value, hints[key], where.at(key, "models"), f"{name}.{key}", base)
    missing = [f.name for f in fields.values() if f.default is dataclasses.MISSING and f.name not in kwargs]
    if missing:
        raise ConfigError(f"{where.file}: {name} lacks required key(s) {', '.join(missing)}.")
    return cls(**kwargs)


def _coerce(value, typ, where: str, key: str, base: Path):
    """Check `value` against the annotation `typ`, converting paths and lists; ConfigError otherwise."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where, key, base)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: '{key}' must be one of {', '.join(map(repr, args))}; got {value!r}.")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{key}' must be a list; got {value!r}.")
        return tuple(_coerce(v, args[0], where, key, base) for v in value)
    if typ is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: '{key}' must be a path string; got {value!r}.")
        return _resolve(value, base)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' must be true or false; got {value!r}.")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: '{key}' must be an integer; got {value!r}.")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: '{key}' must be a number; got {value!r}.")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: '{key}' must be a string; got {value!r}.")
        return value
    raise TypeError(f"config cannot check values of type {typ!r}")  # a field type this module does not know


def _resolve(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Where:
    """Locates keys in the config text, so messages can say `file:line`."""

    def __init__(self, source: Path | None, text: str):
        self.file = str(source) if source is not None else "<config>"
        self.lines = text.splitlines()

    def at(self, key: str, table: str | None = None) -> str:
        line = self._line(key, table)
        return f"{self.file}:{line}" if line else self.file

    def _line(self, key: str, table: str | None) -> int | None:
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*$")
        current = None
        for i, line in enumerate(self.lines, 1):
            m = header.match(line)
            if m:
                current = m.group(1)
                continue
            if pattern.match(line) and current == table:
                return i
        if table is not None:
            for i, line in enumerate(self.lines, 1):
                m = header.match(line)
                if m and m.group(1) == key:
                    return i
        return None
