"""biobench: which frozen vision model (or multimodal LLM) works best on your biology images, and how sure are we?

Quick use from Python:

```python
import biobench
report = biobench.evaluate(model="open-clip:ViT-B-16/openai", task="newt", data="/data/newt", n_train=16)
print(report.score, report.ci_low, report.ci_high)
```

Bring your own model by subclassing `VisionBackbone` and calling
`register_vision_backbone("my-org", MyBackbone)`; see `biobench.backbones.base`. Bring your
own task with `register_task(TaskSpec(...))`; see `biobench.tasks.spec`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Attributes resolve on first use, so `biobench --help` or `biobench report` do not pay
# for importing torch, timm and open_clip.
_LAZY = {
    "evaluate": "biobench.api",
    "EncodedImgBatch": "biobench.backbones.base",
    "VisionBackbone": "biobench.backbones.base",
    "list_vision_backbones": "biobench.backbones",
    "load_vision_backbone": "biobench.backbones",
    "register_vision_backbone": "biobench.backbones",
    "Experiment": "biobench.config",
    "Model": "biobench.config",
    "Report": "biobench.store",
    "TaskSpec": "biobench.tasks.spec",
    "register_task": "biobench.tasks",
    "BiobenchError": "biobench.errors",
    "BackboneError": "biobench.errors",
    "ConfigError": "biobench.errors",
    "DataError": "biobench.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'biobench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


if TYPE_CHECKING:
    from biobench.api import evaluate
    from biobench.backbones import list_vision_backbones, load_vision_backbone, register_vision_backbone
    from biobench.backbones.base import EncodedImgBatch, VisionBackbone
    from biobench.config import Experiment, Model
    from biobench.errors import BackboneError, BiobenchError, ConfigError, DataError
    from biobench.store import Report
    from biobench.tasks import register_task
    from biobench.tasks.spec import TaskSpec
