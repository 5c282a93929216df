"""Task registry: name -> task module (see `biobench.tasks.base` for what a module provides)."""

from __future__ import annotations

import difflib
from types import ModuleType

from biobench.errors import ConfigError
from biobench.tasks import ages, hybrids, newt
from biobench.tasks.base import EvalContext, TaskReport, protocol_id

TASKS: dict[str, ModuleType] = {task.NAME: task for task in (newt, ages, hybrids)}


def get_task(name: str) -> ModuleType:
    """The task module called `name`, or a `ConfigError` listing the known ones."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown task '{name}'.{hint} Known tasks: {', '.join(sorted(TASKS))}.")
    return TASKS[name]


def has_code(name: str, method: str) -> bool:
    """Whether task `name` can evaluate models of `method` ("cvml": features + probe, "mllm": prompting)."""
    task = get_task(name)
    return hasattr(task, "evaluate_mllm") if method == "mllm" else hasattr(task, "evaluate")


def protocol(task: ModuleType, cfg) -> str:
    """The protocol id of `task` under `cfg` (part of every experiment key)."""
    return protocol_id(task.NAME, task.VERSION, cfg)


__all__ = ["TASKS", "get_task", "has_code", "protocol", "EvalContext", "TaskReport"]
