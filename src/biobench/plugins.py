"""User plugins: modules or .py files imported before a config is checked, so they can register
backbones (`register_vision_backbone`) and tasks (`register_task`)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from biobench.errors import BiobenchError, ConfigError


def load_plugins(plugins: Sequence[str], base: Path) -> None:
    """Import each plugin (module name or .py file, relative to `base`); a file is imported once per process."""
    for plugin in plugins:
        try:
            if plugin.endswith(".py"):
                path = (Path(plugin) if Path(plugin).is_absolute() else base / plugin).resolve()
                name = f"biobench_plugin_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None or not path.is_file():
                    raise ConfigError(f"Plugin file {path} not found.")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
            else:
                importlib.import_module(plugin)
        except BiobenchError:
            raise
        except Exception as err:
            raise ConfigError(f"Cannot import plugin '{plugin}': {type(err).__name__}: {err}") from err
