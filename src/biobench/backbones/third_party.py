"""Backbones from open_clip, timm and torchvision.

Checkpoint strings (the part after `ORG:`):

| org | ckpt | example |
|---|---|---|
| `open-clip` | `ARCH/PRETRAINED`, `hf-hub:ORG/REPO`, `local-dir:DIR`, `ARCH/PATH` or `ARCH@PATH` (local weights) | `ViT-B-16/openai`, `hf-hub:imageomics/bioclip` |
| `timm` | any timm model name, optionally `@PATH` for local weights | `vit_base_patch14_reg4_dinov2.lvd142m` |
| `torchvision` | `ARCH/WEIGHTS` or `ARCH@PATH` | `resnet50/IMAGENET1K_V2` |

With `pretrained = false` each builds a (seeded) randomly initialised network and
downloads nothing: the offline tests use that path.
"""

from __future__ import annotations

import difflib
import os
import urllib.error
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from biobench.backbones.base import EncodedImgBatch, VisionBackbone
from biobench.errors import BackboneError


def _split_local_path(ckpt: str) -> tuple[str, str]:
    """`NAME@PATH` -> (NAME, PATH); plain `NAME` -> (NAME, "")."""
    name, _, path = ckpt.partition("@")
    if path and not os.path.isfile(path):
        raise BackboneError(f"Checkpoint '{ckpt}' points at local weights '{path}', which is not a file.")
    return name, path


def _looks_like_network_error(err: BaseException) -> bool:
    text = str(err).lower()
    network_words = ("download", "connection", "internet", "resolve", "offline", "hub", "timed out", "urlopen")
    return isinstance(err, (urllib.error.URLError, ConnectionError, TimeoutError)) or (
        isinstance(err, (OSError, RuntimeError)) and any(w in text for w in network_words)
    )


def _download_error(name: str, err: BaseException, predownload: str, cache: str, local: str) -> BackboneError:
    return BackboneError(
        f"Could not fetch the weights of {name}: {err}\n"
        "biobench cannot download them from here. Either\n"
        f"  1. download them once on a machine with network access:\n       {predownload}\n"
        f"     then copy the cache ({cache}) to this machine (set HF_HUB_OFFLINE=1 to skip network checks), or\n"
        f"  2. point the checkpoint at a local weights file: {local}"
    )


class OpenClip(VisionBackbone):
    """Image tower of an [open_clip](https://github.com/mlfoundations/open_clip) model, with its text tower for CLIP-style tasks."""

    @classmethod
    def resolve(cls, ckpt: str, pretrained: bool = True) -> tuple[str, str | None]:
        """(architecture, weights source or None for random init) of `ckpt`, checked without loading anything."""
        import open_clip

        if ckpt.startswith("hf-hub:"):
            return ckpt, ckpt  # the Hub says whether it exists, when the weights are fetched
        if ckpt.startswith("local-dir:"):  # a folder with open_clip_config.json + weights (`biobench train` exports these)
            folder = ckpt.removeprefix("local-dir:")
            if not os.path.isfile(os.path.join(folder, "open_clip_config.json")):
                raise BackboneError(
                    f"open-clip checkpoint '{ckpt}': {folder} has no open_clip_config.json (an open_clip local-dir checkpoint)."
                )
            return ckpt, ckpt
        arch, sep, source = ckpt.partition("@") if "@" in ckpt else ckpt.partition("/")
        if arch not in open_clip.list_models():
            close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
            raise BackboneError(
                f"open-clip has no architecture '{arch}' (from '{ckpt}'). Closest: {', '.join(close) or 'none'}. "
                "`python -c 'import open_clip; print(open_clip.list_models())'` lists them all."
            )
        local_file = bool(source) and os.path.isfile(source)
        if sep == "@" and not local_file:
            raise BackboneError(f"open-clip checkpoint '{ckpt}': local weights '{source}' is not a file.")
        if not pretrained and not local_file:
            # Random initialisation. A local weights file is still loaded (it needs no
            # download), as the timm and torchvision orgs do.
            return arch, None
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if not source:
            raise BackboneError(
                f"open-clip checkpoint '{ckpt}' names no weights. Use ARCH/PRETRAINED (tags for {arch}: {', '.join(tags) or 'none'}), "
                "ARCH@/path/to/weights, or set pretrained = false for a random initialisation."
            )
        if not local_file and source not in tags:
            raise BackboneError(
                f"open-clip has no pretrained tag '{source}' for {arch} and no file of that name exists. Tags: {', '.join(tags) or 'none'}."
            )
        return arch, source

    @classmethod
    def check_ckpt(cls, ckpt: str, pretrained: bool = True) -> None:
        cls.resolve(ckpt, pretrained)

    def __init__(self, ckpt: str, *, pretrained: bool = True):
        super().__init__()
        import open_clip

        arch, source = self.resolve(ckpt, pretrained)
        if ckpt.startswith(("hf-hub:", "local-dir:")):
            build = lambda: open_clip.create_model_from_pretrained(ckpt)  # noqa: E731
        else:

            def build():
                model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=source)
                return model, preprocess

        try:
            model, self._transform = build()
        except Exception as err:
            if pretrained and _looks_like_network_error(err):
                if ckpt.startswith("hf-hub:"):
                    predownload = f"python -c \"import open_clip; open_clip.create_model_from_pretrained('{ckpt}')\""
                else:
                    predownload = f"python -c \"import open_clip; open_clip.create_model_from_pretrained('{arch}', pretrained='{source}')\""
                raise _download_error(
                    f"open-clip:{ckpt}",
                    err,
                    predownload,
                    "$HF_HOME, by default ~/.cache/huggingface",
                    "open-clip:ARCH@/path/to/open_clip_pytorch_model.bin",
                ) from err
            raise
        self.model = model
        self._tokenizer_name = arch
        # Vision transformers return (pooled, tokens) when asked; other towers ignore the flag.
        self.model.visual.output_tokens = True

    def make_img_transform(self) -> Callable:
        return self._transform

    def img_encode(self, batch: Float[Tensor, "batch 3 height width"]) -> EncodedImgBatch:
        out = self.model.visual(batch)
        if isinstance(out, tuple):
            pooled, tokens = out
            return EncodedImgBatch(pooled, tokens if tokens is not None and tokens.ndim == 3 else None)
        return EncodedImgBatch(out, None)

    def txt_encode(self, texts: list[str]) -> Float[Tensor, "n dim"]:
        """Embed captions or class prompts with the text tower (unnormalised)."""
        import open_clip

        if getattr(self, "_tokenizer", None) is None:
            self._tokenizer = open_clip.get_tokenizer(self._tokenizer_name)  # truncates to the model's context length
        tokenizer = self._tokenizer
        device = next(self.model.parameters()).device
        return self.model.encode_text(tokenizer(texts).to(device))

    @property
    def logit_scale(self) -> Tensor:
        return self.model.logit_scale


class Timm(VisionBackbone):
    """Any [timm](https://github.com/huggingface/pytorch-image-models) model.

    The image vector is the first (CLS) token when the model has prefix tokens,
    otherwise the model's own pooled pre-logits features.
    """

    @classmethod
    def check_ckpt(cls, ckpt: str, pretrained: bool = True) -> None:
        import timm

        name, _ = _split_local_path(ckpt)
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            raise BackboneError(
                f"timm has no model '{name}'. Closest: {', '.join(close) or 'none'}. "
                "`python -c 'import timm; print(timm.list_models(\"vit_*\"))'` lists them."
            )

    def __init__(self, ckpt: str, *, pretrained: bool = True):
        super().__init__()
        import timm

        self.check_ckpt(ckpt, pretrained)
        name, path = _split_local_path(ckpt)
        kwargs: dict = {"num_classes": 0}
        if path:
            kwargs["pretrained_cfg_overlay"] = {"file": path}
        try:
            self.model = timm.create_model(name, pretrained=pretrained or bool(path), **kwargs)
        except Exception as err:
            if pretrained and _looks_like_network_error(err):
                raise _download_error(
                    f"timm:{ckpt}",
                    err,
                    f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\"",
                    "$HF_HOME, by default ~/.cache/huggingface",
                    f"timm:{name}@/path/to/model.safetensors",
                ) from err
            raise
        data_cfg = timm.data.resolve_data_config({}, model=self.model)
        self._transform = timm.data.create_transform(**data_cfg, is_training=False)

    def make_img_transform(self) -> Callable:
        return self._transform

    def img_encode(self, batch: Float[Tensor, "batch 3 height width"]) -> EncodedImgBatch:
        feats = self.model.forward_features(batch)
        n_prefix = getattr(self.model, "num_prefix_tokens", 0)
        if feats.ndim == 3 and n_prefix > 0:
            return EncodedImgBatch(feats[:, 0], feats[:, n_prefix:])
        pooled = self.model.forward_head(feats, pre_logits=True)
        if pooled.ndim != 2:
            pooled = pooled.flatten(1)
        return EncodedImgBatch(pooled, feats if feats.ndim == 3 else None)


class Torchvision(VisionBackbone):
    """A [torchvision](https://pytorch.org/vision/stable/models.html) classifier with its head removed."""

    HEAD_ATTRS = ("fc", "head", "heads", "classifier")

    @classmethod
    def resolve(cls, ckpt: str, pretrained: bool = True):
        """(architecture, weights enum member, local path) of `ckpt`, checked without loading anything."""
        from torchvision import models

        name, path = _split_local_path(ckpt)
        arch, _, weights_name = name.partition("/")
        if arch not in models.list_models(module=models):
            close = difflib.get_close_matches(arch, models.list_models(module=models), n=3)
            raise BackboneError(
                f"torchvision has no classification model '{arch}'. Closest: {', '.join(close) or 'none'}. "
                "`python -c 'import torchvision; print(torchvision.models.list_models())'` lists them."
            )
        weights_enum = models.get_model_weights(arch)
        choices = ", ".join(w.name for w in weights_enum)
        if weights_name:
            try:
                return arch, weights_enum[weights_name], path
            except KeyError:
                raise BackboneError(f"torchvision {arch} has no weights '{weights_name}'. Choose one of: {choices}.") from None
        if pretrained and not path:
            raise BackboneError(
                f"torchvision checkpoint '{ckpt}' names no weights. Use {arch}/WEIGHTS ({choices}), "
                f"{arch}@/path/to/state_dict.pth, or set pretrained = false."
            )
        return arch, weights_enum.DEFAULT, path

    @classmethod
    def check_ckpt(cls, ckpt: str, pretrained: bool = True) -> None:
        cls.resolve(ckpt, pretrained)

    def __init__(self, ckpt: str, *, pretrained: bool = True):
        super().__init__()
        from torchvision import models

        arch, weights, path = self.resolve(ckpt, pretrained)
        load_hub_weights = pretrained and not path
        try:
            self.model = models.get_model(arch, weights=weights if load_hub_weights else None)
        except Exception as err:
            if _looks_like_network_error(err):
                raise _download_error(
                    f"torchvision:{ckpt}",
                    err,
                    f"python -c \"import torchvision; torchvision.models.get_model('{arch}', weights='{weights.name}')\"",
                    "$TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints",
                    f"torchvision:{arch}@/path/to/state_dict.pth",
                ) from err
            raise
        if path:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        self._remove_head(ckpt)
        self._transform = weights.transforms()

    def _remove_head(self, ckpt: str) -> None:
        for attr in self.HEAD_ATTRS:
            head = getattr(self.model, attr, None)
            if isinstance(head, torch.nn.Linear):
                setattr(self.model, attr, torch.nn.Identity())
                return
            if isinstance(head, torch.nn.Sequential):
                linears = [i for i, m in enumerate(head) if isinstance(m, torch.nn.Linear)]
                if linears:
                    # Keep what precedes the last Linear (pooling, norm, flatten); drop the classifier.
                    head[linears[-1]] = torch.nn.Identity()
                    return
        raise BackboneError(
            # self.ckpt is only set after construction, so name the checkpoint being built.
            f"Could not find the classifier head of torchvision:{ckpt} ({type(self.model).__name__}) "
            f"(looked for {', '.join(self.HEAD_ATTRS)}). Register a custom VisionBackbone for this model."
        )

    def make_img_transform(self) -> Callable:
        return self._transform

    def img_encode(self, batch: Float[Tensor, "batch 3 height width"]) -> EncodedImgBatch:
        out = self.model(batch)
        if isinstance(out, tuple):  # GoogLeNet/Inception return aux outputs in some modes
            out = out[0]
        return EncodedImgBatch(out.flatten(1), None)
