"""The task registry: name -> `TaskSpec` (see `biobench.tasks.spec`).

Built-in tasks register themselves when their module is imported (on the first lookup);
installed packages add tasks through the `biobench.tasks` entry-point group (an entry
point may name a `TaskSpec` or a module that registers one); a config's
`plugins = [...]` are imported before its `[data]` names are checked, so a plugin file
that calls `register_task` adds a task a config can use.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging

from biobench.errors import ConfigError
from biobench.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

BUILTIN = ("newt", "ages", "hybrids", "plankton", "beluga", "fishnet", "kabr", "imagenet", "rarespecies", "mammalnet", "ecdysis",
           "birds525", "leopard", "herbarium19", "fungiclef", "inat21", "plantnet", "iwildcam", "clip_sets", "inquire", "bio_retrieval")  # fmt: skip
"""Modules of `biobench.tasks` that define the built-in tasks."""
ENTRY_POINT_GROUP = "biobench.tasks"

_REGISTRY: dict[str, TaskSpec] = {}
_LOADED = False


def register_task(spec: TaskSpec) -> TaskSpec:
    """Make `spec` available by name in configs, the CLI and `biobench.evaluate`; returns it.

    Use at the end of a task module: `SPEC = register_task(TaskSpec(name="mytask", ...))`.
    """
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"register_task needs a TaskSpec, got {spec!r}.")
    old = _REGISTRY.get(spec.name)
    if old is not None and old is not spec:
        logger.warning("Replacing task '%s' (from %s) with the one from %s.", spec.name, old.read.__module__, spec.read.__module__)
    _REGISTRY[spec.name] = spec
    return spec


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for name in BUILTIN:
        importlib.import_module(f"biobench.tasks.{name}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if isinstance(obj, TaskSpec):
                register_task(obj)
        except Exception as err:  # a broken plugin must not break unrelated runs
            logger.warning("Could not load task plugin %s (%s): %s", ep.name, ep.value, err)


def task_names() -> list[str]:
    """Every registered task, sorted."""
    _load()
    return sorted(_REGISTRY)


def get_task(name: str) -> TaskSpec:
    """The spec called `name`, or a `ConfigError` listing the known ones."""
    _load()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown task '{name}'.{hint} Known tasks: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


__all__ = ["BUILTIN", "TaskSpec", "get_task", "register_task", "task_names"]
