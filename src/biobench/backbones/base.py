"""The frozen-backbone interface every model family implements, and the org registry.

A backbone is a `torch.nn.Module` that turns a batch of preprocessed images into one
vector per image (and optionally patch vectors). Tasks never see backbones: the
embedding engine (`biobench.embed`) runs them and caches what they return, keyed by
`VisionBackbone.fingerprint`.

To evaluate your own model, subclass `VisionBackbone` and register it once:

```python
import biobench

class MyNet(biobench.VisionBackbone):
    def __init__(self, ckpt: str, **kwargs):
        super().__init__()
        self.net = load_my_net(ckpt)

    def img_encode(self, batch):
        return biobench.EncodedImgBatch(self.net(batch), None)

    def make_img_transform(self):
        return my_eval_transform

biobench.register_vision_backbone("mine", MyNet)
```

after which `mine:CKPT` works in configs and `biobench.evaluate`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib.metadata
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from biobench.errors import BackboneError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EncodedImgBatch:
    """What `VisionBackbone.img_encode` returns."""

    img_features: Float[Tensor, "batch img_dim"]
    """One vector per image."""
    patch_features: Float[Tensor, "batch n_patches patch_dim"] | None = None
    """Patch-level vectors, for models that have them (ViTs); may differ in width from `img_features`."""

    def __post_init__(self) -> None:
        # A wrong shape from a user's backbone would otherwise surface far away, in a probe.
        if not isinstance(self.img_features, Tensor) or self.img_features.ndim != 2:
            shape = getattr(self.img_features, "shape", type(self.img_features).__name__)
            raise BackboneError(
                f"img_encode() must return img_features of shape (batch, dim); got {shape}. "
                "Pool or flatten the model's output inside img_encode()."
            )
        if self.patch_features is not None and self.patch_features.ndim != 3:
            raise BackboneError(
                f"img_encode() must return patch_features of shape (batch, n_patches, dim) or None; got {tuple(self.patch_features.shape)}."
            )


class VisionBackbone(torch.nn.Module):
    """A frozen vision model that embeds batches of images into batches of vectors.

    Subclasses take the checkpoint string as their first constructor argument and accept
    `pretrained: bool` (False = random initialisation, which needs no download).
    """

    org: str = ""
    """Registry org this instance was loaded under (set by `load_vision_backbone`)."""
    ckpt: str = ""
    """Checkpoint string this instance was built from (the constructor's first argument, or `load_vision_backbone`'s)."""
    pretrained: bool = True
    """False for a seeded random initialisation (set by `load_vision_backbone`)."""

    def __init_subclass__(cls, **kwargs) -> None:
        # Remember the checkpoint an instance was built from (the first argument, by the
        # convention above), so `biobench.evaluate(model=MyNet("v7"))` is keyed `ORG:v7`, the
        # same experiment as `ORG:v7` in a config, and never shares a key with MyNet("v1").
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            init(self, *args, **kw)
            ckpt = args[0] if args else kw.get("ckpt")
            if isinstance(ckpt, str) and not self.__dict__.get("ckpt"):
                self.ckpt = ckpt

        cls.__init__ = recording_init  # type: ignore[method-assign]

    @classmethod
    def check_ckpt(cls, ckpt: str, pretrained: bool = True) -> None:
        """Raise `BackboneError` for a checkpoint this class cannot load, without loading or downloading
        anything (dry runs check every model this way). The default accepts any name."""

    def img_encode(self, batch: Float[Tensor, "batch 3 height width"]) -> EncodedImgBatch:
        """Encode a batch of preprocessed images."""
        raise NotImplementedError(f"{type(self).__name__} must implement img_encode().")

    def make_img_transform(self) -> Callable[[Any], Tensor]:
        """The evaluation transform: a PIL image in, a (3, H, W) float tensor out."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_img_transform().")

    def txt_encode(self, texts: list[str]) -> Float[Tensor, "n dim"]:
        """Optional text tower (CLIP-style models): one vector per text, in the space of `img_encode`'s vectors.

        Backbones that have one override it (tokenising inside, to the model's context length);
        the text route (`biobench.routes.text`: zero-shot classification, retrieval, re-ranking)
        normalises and caches what it returns. Backbones without one leave it: text-route tasks
        then show "no code" for them."""
        raise NotImplementedError(f"{type(self).__name__} has no text tower.")

    @classmethod
    def has_text_tower(cls, ckpt: str) -> bool:
        """Whether `ckpt` of this class has a text tower, decided without loading anything (dry runs
        use it). The default: the class overrides `txt_encode`."""
        return cls.txt_encode is not VisionBackbone.txt_encode

    def weights_identity(self) -> str:
        """A string that changes whenever the weights change.

        The default hashes every parameter and buffer, which is always right and costs
        about a second per GB of weights. Subclasses with a cheaper stable identity (a
        versioned release tag) may override it.
        """
        return state_dict_digest(self)

    def fingerprint_parts(self) -> dict[str, str]:
        """Everything that determines this backbone's features, for the cache key."""
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "org": self.org,
            "ckpt": self.ckpt,
            "weights": self.weights_identity(),
            "transform": describe_transform(self.make_img_transform()),
        }

    @property
    def name(self) -> str:
        """`ORG:CKPT`, as written in configs, marked `#random-init` as reports mark it."""
        return f"{self.org}:{self.ckpt}" + ("" if self.pretrained else "#random-init")


def fingerprint(backbone: VisionBackbone) -> str:
    """A stable hex digest of (org, ckpt, weights identity, transform)."""
    blob = json.dumps(backbone.fingerprint_parts(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def state_dict_digest(module: torch.nn.Module) -> str:
    """Hash all parameters and buffers (names, dtypes, shapes and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def describe_transform(transform: object) -> str:
    """A repr of a transform that is stable across processes (memory addresses removed)."""
    return _ADDRESS.sub("", repr(transform))


###########
# Registry
###########

_REGISTRY: dict[str, type[VisionBackbone]] = {}
_ENTRY_POINTS_LOADED = False
ENTRY_POINT_GROUP = "biobench.backbones"


def register_vision_backbone(org: str, cls: type[VisionBackbone]) -> None:
    """Make `cls` available as `ORG:CKPT` in configs, the CLI and `biobench.evaluate`."""
    if not (isinstance(cls, type) and issubclass(cls, VisionBackbone)):
        raise TypeError(f"register_vision_backbone({org!r}, ...) needs a VisionBackbone subclass, got {cls!r}.")
    if ":" in org or not org:
        raise ValueError(f"Backbone org {org!r} must be non-empty and contain no ':'.")
    if org in _REGISTRY and _REGISTRY[org] is not cls:
        logger.warning("Replacing backbone org '%s' (%s) with %s.", org, _REGISTRY[org].__qualname__, cls.__qualname__)
    _REGISTRY[org] = cls


def _load_entry_points() -> None:
    """Register orgs that installed packages advertise under the `biobench.backbones` entry-point group."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            register_vision_backbone(ep.name, ep.load())
        except Exception as err:  # a broken plugin must not break unrelated runs
            logger.warning("Could not load backbone plugin %s (%s): %s", ep.name, ep.value, err)


def registered_org(cls: type[VisionBackbone]) -> str | None:
    """The org `cls` is registered under (the first, sorted, if several), or None."""
    _load_entry_points()
    orgs = sorted(org for org, c in _REGISTRY.items() if c is cls)
    return orgs[0] if orgs else None


def list_vision_backbones() -> list[str]:
    """All registered backbone orgs, sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def backbone_class(org: str) -> type[VisionBackbone]:
    """The class registered for `org`, or a `BackboneError` listing the known orgs."""
    _load_entry_points()
    if org not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        close = difflib.get_close_matches(org, list(_REGISTRY), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise BackboneError(
            f"Unknown backbone org '{org}'.{hint} Known orgs: {known}. "
            "Register your own with biobench.register_vision_backbone(ORG, Class)."
        )
    return _REGISTRY[org]


def load_vision_backbone(org: str, ckpt: str, *, pretrained: bool = True) -> VisionBackbone:
    """Build the backbone `ORG:CKPT` in eval mode, with gradients off."""
    cls = backbone_class(org)
    # Random initialisation is seeded so that a `pretrained=False` backbone is the same
    # network in every process: reproducible scores and a stable cache fingerprint.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = cls(ckpt, pretrained=pretrained)
    backbone.org, backbone.ckpt, backbone.pretrained = org, ckpt, pretrained
    backbone.eval().requires_grad_(False)
    return backbone
