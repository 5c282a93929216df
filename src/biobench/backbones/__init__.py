"""Vision backbones: the interface, the org registry, and the built-in orgs.

Orgs registered here: `open-clip`, `timm`, `torchvision`, `hf` (Hugging Face `transformers`),
`builtin` (`pixel-stats`, `random-vit`, `colour-clip`). Installed packages can add orgs through the `biobench.backbones`
entry-point group; scripts call `register_vision_backbone`.
"""

from biobench.backbones.base import (
    EncodedImgBatch,
    VisionBackbone,
    backbone_class,
    fingerprint,
    list_vision_backbones,
    load_vision_backbone,
    register_vision_backbone,
)
from biobench.backbones.builtin import Builtin, PixelStats, RandomViT
from biobench.backbones.hf import HuggingFace
from biobench.backbones.third_party import OpenClip, Timm, Torchvision

register_vision_backbone("open-clip", OpenClip)
register_vision_backbone("timm", Timm)
register_vision_backbone("torchvision", Torchvision)
register_vision_backbone("hf", HuggingFace)
register_vision_backbone("builtin", Builtin)

__all__ = [
    "EncodedImgBatch",
    "VisionBackbone",
    "backbone_class",
    "fingerprint",
    "list_vision_backbones",
    "load_vision_backbone",
    "register_vision_backbone",
    "Builtin",
    "PixelStats",
    "RandomViT",
    "OpenClip",
    "Timm",
    "Torchvision",
    "HuggingFace",
]
