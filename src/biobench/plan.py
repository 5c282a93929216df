"""Planning: the grid's (task, experiment) pairs, their keys and what a run will do with each.

The protocol id is written here and nowhere else: `NAME/vVERSION`, then `#HASH` of the
definition of a task declared in a config (`[tasks.NAME]`), then `+HASH` of the
task options changed from their defaults, then for MLLMs `|mllm-PROMPTING`, `+HASH` of any
other answer-shaping knob changed from its default, and `+debug` for debug runs. It is
part of every experiment key, so two protocols never share (or skip) a result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Literal

from biobench.config import Config, Experiment, Model
from biobench.store import ExperimentKey, Store
from biobench.tasks import get_task
from biobench.tasks.spec import TaskSpec

Status = Literal["run", "done", "no data", "no code", "n/a", "claimed", "bad data"]
"""'n/a': the task ignores n_train (it runs once, at n_train = -1); 'bad data': its dataset failed to read."""

ROUTE_OF_METHOD = {"cvml": "probe", "mllm": "mllm", "zero-shot": "text"}
"""Which route evaluates a model of each method."""


def uses_n_train(spec: TaskSpec, method: str) -> bool:
    """Whether the grid's n_train values matter for `spec` under `method` (the text route trains nothing)."""
    return spec.uses_n_train and ROUTE_OF_METHOD[method] != "text"


def has_code(spec: TaskSpec, model: Model) -> bool:
    """Whether `model` can be evaluated on `spec`: the task has the model's route, and for the text route the
    backbone has a text tower (decided without loading it)."""
    route = ROUTE_OF_METHOD[model.method]
    if not spec.supports(route):
        return False
    if route == "text":
        from biobench.backbones import backbone_class
        from biobench.errors import BackboneError

        try:
            return backbone_class(model.org).has_text_tower(model.ckpt)
        except BackboneError:
            return False
    return True


@dataclasses.dataclass(frozen=True)
class Planned:
    """One (task, experiment) of the grid and what the launcher will do with it."""

    task: str
    experiment: Experiment
    key: ExperimentKey
    status: Status


def _digest(changed: dict, n: int) -> str:
    return hashlib.sha256(json.dumps(changed, sort_keys=True, default=list).encode()).hexdigest()[:n]


def task_protocol(spec: TaskSpec, options=None) -> str:
    """`NAME/vVERSION`, `#DEFINITION` for a declared task, plus a short hash of any option changed from its
    default (the data dir is not an option)."""
    base = f"{spec.name}/v{spec.version}" + (f"#{spec.definition}" if spec.definition else "")
    if options is None:
        return base
    changed = {}
    for f in dataclasses.fields(options):
        if f.name == "data":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        value = getattr(options, f.name)
        if value != default:
            changed[f.name] = value
    return f"{base}+{_digest(changed, 10)}" if changed else base


def protocol_id(spec: TaskSpec, options, model: Model, debug: bool = False) -> str:
    """The full protocol id of `model` on the task under `options` (see the module docstring)."""
    text = task_protocol(spec, options)
    if model.method != "mllm":
        return text
    defaults = Model(model.org, model.ckpt, method="mllm").mllm_knobs()
    changed = {k: v for k, v in model.mllm_knobs().items() if k != "prompting" and v != defaults[k]}
    text += f"|mllm-{model.prompting}"
    if changed:
        text += "+" + _digest(changed, 8)
    return text + ("+debug" if debug else "")


def key_for(spec: TaskSpec, options, exp: Experiment, debug: bool = False) -> ExperimentKey:
    """The experiment key; a task that ignores n_train is keyed at n_train = -1 whatever the grid says."""
    m = exp.model
    n_train = exp.n_train if uses_n_train(spec, m.method) else -1
    return ExperimentKey(spec.name, m.org, m.key_ckpt, m.method, n_train, exp.seed, protocol_id(spec, options, m, debug))


def plan(cfg: Config, store: Store | None = None) -> list[Planned]:
    """Every (task, experiment) pair with its status, for the tasks in [data]; nothing is run.

    With no [data] at all, every registered task shows as "no data", which tells a new user
    what exists. A task that ignores n_train runs once per model and seed; the grid's other
    n_train values show as "n/a".
    """
    from biobench.tasks import task_names

    done = store.done_keys() if store is not None else set()
    names = sorted(cfg.data) if cfg.data else task_names()
    specs = {name: get_task(name) for name in names}
    options = {name: cfg.task_options_for(name) if name in cfg.data else None for name in names}
    out, seen = [], set()
    for exp in cfg.experiments:
        for name in names:
            spec = specs[name]
            key = key_for(spec, options[name], exp, cfg.settings.debug)
            if options[name] is None:
                status: Status = "no data"
            elif not has_code(spec, exp.model):
                status = "no code"
            elif key in seen:
                status = "n/a"
            elif key in done:
                status = "done"
            else:
                status = "run"
            seen.add(key)
            kept = uses_n_train(spec, exp.model.method)
            out.append(Planned(name, exp if kept else dataclasses.replace(exp, n_train=-1), key, status))
    return out
