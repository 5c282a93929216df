"""Hugging Face `transformers` models: `hf:REPO`, `hf:REPO@REVISION` or `hf:/path/to/saved/model`.

The model is `AutoModel.from_pretrained` (or `AutoModel.from_config` for `pretrained = false`:
a seeded random initialisation of the same architecture, which still reads the config), its
evaluation transform the checkpoint's `AutoImageProcessor`, and for CLIP-style checkpoints
(a contrastive model type, `CONTRASTIVE`: CLIP, SigLIP, SigLIP 2, Chinese-CLIP, AltCLIP, ALIGN,
MetaCLIP 2) its `AutoTokenizer`. `transformers` is imported only when such a backbone is built.

Image features:

- CLIP-style models (those with `get_image_features`): the model's own image embedding, the
  projected pooled output (CLIP: the final-LayerNorm'ed CLS token through `visual_projection`;
  SigLIP / SigLIP 2: the attention-pooling head), in the space of `get_text_features`.
- Other encoders (DINOv2, DINOv2 with registers, DINOv3, ViT, ...): `pooler_output` when the
  model returns a 2-D one (for the DINO family the final-LayerNorm'ed CLS token, as their model
  cards use it and as the `timm` org takes DINOv2's), else the first token of
  `last_hidden_state`.
- Patch features: the last hidden states after the prefix tokens (CLS, registers).

Text tower (`txt_encode`): the tokenizer pads to the longest text (CLIP: pooling takes the EOS
token and masks the padding) except for SigLIP and SigLIP 2, which were trained on texts
padded to the full context (`padding="max_length"`, 64 tokens) and pool the last position,
so they pad to `text_config.max_position_embeddings`; the inputs the tokenizer returns
(`input_ids`, and `attention_mask` where its `model_input_names` include it) go to
`get_text_features`. `logit_scale` (log-space, as open_clip's) and `logit_bias` (SigLIP's;
None for CLIP) are exposed.

The evaluation transform is the processor itself (`HfImageTransform`), so the exact
preprocessing path is what `transformers` users get. For the standard processors (CLIP,
SigLIP, BiT/DINOv2, ViT: resize on uint8, centre crop, rescale, normalise) it also offers
`fast_plan()`, the same steps as `biobench.fastpath` replays them (centre crop anchored as
`transformers` anchors it, rounding down); others (DINOv3 resizes after rescaling) run exact.

Weights identity: a local folder's files are hashed (`biobench.weights`, in the experiment
key as `#weights=`); a Hub id is pinned by the commit the local Hugging Face cache resolves
it to (`#revision=`), or by `@REVISION` in the checkpoint; a Hub id not in the cache is keyed
by name, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from biobench.backbones.base import EncodedImgBatch, VisionBackbone, state_dict_digest
from biobench.backbones.third_party import _download_error, _looks_like_network_error
from biobench.errors import BackboneError

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
MAX_LENGTH_PADDING = ("siglip", "siglip2")
"""Model types whose text towers were trained on texts padded to the full context (`padding="max_length"`)."""
CONTRASTIVE = ("clip", "siglip", "siglip2", "chinese_clip", "altclip", "align", "metaclip_2")
"""Model types whose `get_text_features` and `get_image_features` share one space (the text route's towers)."""
FAST_PROCESSORS = ("CLIPImageProcessor", "SiglipImageProcessor", "BitImageProcessor", "ViTImageProcessor")
"""Image processors whose steps (uint8 resize, centre crop, rescale, normalise) `fastpath` replays."""


def split_ckpt(ckpt: str) -> tuple[str, str | None]:
    """(`source`: a local folder or a Hub repo id, `revision` or None). A folder is never split at '@'."""
    if os.path.isdir(os.path.expanduser(ckpt)) or "@" not in ckpt:
        return ckpt, None
    source, _, revision = ckpt.rpartition("@")
    return source, revision or None


def local_dir(ckpt: str) -> Path | None:
    """The folder `ckpt` names, or None for a Hub id."""
    source, _ = split_ckpt(ckpt)
    path = Path(source).expanduser()
    return path if path.is_dir() else None


def read_config(ckpt: str) -> dict | None:
    """The checkpoint's config.json, from its folder or the local Hugging Face cache (no download); None if neither has it."""
    from biobench.weights import hub_snapshot

    folder = local_dir(ckpt)
    if folder is None:
        source, revision = split_ckpt(ckpt)
        snap = hub_snapshot(source, revision)
        folder = snap[1] if snap else None
    if folder is None or not (folder / "config.json").is_file():
        return None
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BackboneError(f"hf checkpoint '{ckpt}': cannot read {folder / 'config.json'} ({err}).") from err


def _size_of(value: Any, key: str) -> int | None:
    got = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
    return int(got) if got else None


class HfImageTransform:
    """A `transformers` image processor as a PIL -> (3, H, W) tensor transform (the exact path), with its fast-path plan."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, image: Any) -> Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        try:
            settings = self.processor.to_json_string()
        except Exception:  # a processor without a JSON form: its repr
            settings = repr(self.processor)
        settings = json.dumps(json.loads(settings), sort_keys=True) if settings.lstrip().startswith("{") else settings
        return f"HfImageTransform({type(self.processor).__name__}, backend={getattr(self.processor, 'backend', '?')}, {settings})"

    def fast_plan(self):
        """The processor as `biobench.fastpath` steps, or the reason it has none."""
        from biobench import fastpath

        p = self.processor
        name = type(p).__name__
        if name not in FAST_PROCESSORS or getattr(p, "backend", "torchvision") != "torchvision":
            return f"image processor {name} (backend {getattr(p, 'backend', '?')}) has no tensor replay here"
        if getattr(p, "do_pad", False):
            return f"image processor {name} pads"
        geometry: list = []
        if p.do_resize:
            resample = int(getattr(p.resample, "value", p.resample))
            interp = {2: "bilinear", 3: "bicubic"}.get(resample)
            if interp is None:
                return f"image processor {name} resamples with PIL mode {resample}, which torch does not resample as PIL does"
            short, height, width = (_size_of(p.size, k) for k in ("shortest_edge", "height", "width"))
            if short and not _size_of(p.size, "longest_edge"):
                geometry.append(fastpath.Resize(short, interp))
            elif height and width:
                geometry.append(fastpath.Resize((height, width), interp))
            else:
                return f"image processor {name} has a resize size ({p.size}) the fast path does not replay"
        if getattr(p, "do_center_crop", False):
            geometry.append(fastpath.CenterCrop((_size_of(p.crop_size, "height"), _size_of(p.crop_size, "width")), anchor="floor"))
        if not geometry:
            return f"image processor {name} neither resizes nor crops, so images cannot be batched"
        if not p.do_rescale or abs(float(p.rescale_factor) - 1 / 255) > 1e-12:
            return f"image processor {name} does not rescale by 1/255"
        mean = std = None
        if p.do_normalize:
            mean, std = fastpath._triple(p.image_mean), fastpath._triple(p.image_std)
        return fastpath.Plan(tuple(geometry), mean, std)


class HuggingFace(VisionBackbone):
    """A Hugging Face `transformers` model (see the module docstring): image features, and a text tower for CLIP-style models."""

    @classmethod
    def check_ckpt(cls, ckpt: str, pretrained: bool = True) -> None:
        source, revision = split_ckpt(ckpt)
        folder = local_dir(ckpt)
        if folder is not None:
            if not (folder / "config.json").is_file():
                raise BackboneError(
                    f"hf checkpoint '{ckpt}': the folder {folder} has no config.json (save a model there with "
                    "model.save_pretrained(DIR) and its processor with processor.save_pretrained(DIR))."
                )
            return
        if source.startswith(("/", ".", "~")) or source.count("/") > 1:
            raise BackboneError(f"hf checkpoint '{ckpt}': {source} is not a folder (nor a Hub repo id like ORG/NAME).")
        if not _REPO_ID.match(source):
            raise BackboneError(
                f"hf checkpoint '{ckpt}' is neither a local folder nor a Hugging Face Hub repo id (ORG/NAME, optionally @REVISION)."
            )

    @classmethod
    def has_text_tower(cls, ckpt: str) -> bool:
        """From the config (folder or local cache): a contrastive image-text model type (`CONTRASTIVE`) with both a text
        and a vision config. A Hub id not cached: by its name (CLIP / SigLIP in it), since nothing may be downloaded to decide."""
        try:
            config = read_config(ckpt)
        except BackboneError:
            return False
        if config is None:
            name = split_ckpt(ckpt)[0].lower()
            return "clip" in name or "siglip" in name
        return config.get("model_type") in CONTRASTIVE and "text_config" in config and "vision_config" in config

    def __init__(self, ckpt: str, *, pretrained: bool = True):
        super().__init__()
        self.check_ckpt(ckpt, pretrained)
        import transformers

        transformers.logging.set_verbosity_error()  # its load reports and progress bars are not biobench's output
        source, revision = split_ckpt(ckpt)
        kwargs: dict = {"revision": revision} if revision else {}
        try:
            if pretrained:
                self.model = transformers.AutoModel.from_pretrained(source, **kwargs)
            else:
                self.model = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(source, **kwargs))
            processor = transformers.AutoImageProcessor.from_pretrained(source, **kwargs)
            self._text = self.has_text_tower(ckpt) and hasattr(self.model, "get_text_features")
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs) if self._text else None
        except Exception as err:
            if _looks_like_network_error(err) or "offline" in str(err).lower() or "couldn't connect" in str(err).lower():
                raise _download_error(
                    f"hf:{ckpt}",
                    err,
                    f"python -c \"import transformers as t; t.AutoModel.from_pretrained('{source}'); "
                    f"t.AutoProcessor.from_pretrained('{source}')\"",
                    "$HF_HOME, by default ~/.cache/huggingface",
                    "hf:/path/to/a/folder/written/by/save_pretrained",
                ) from err
            raise BackboneError(f"Could not load hf:{ckpt} with transformers.AutoModel / AutoImageProcessor: {err}") from err
        self._transform = HfImageTransform(processor)
        self._source, self._revision, self._pretrained = source, revision, pretrained
        config = self.model.config
        self._model_type = getattr(config, "model_type", "")
        text_config = getattr(config, "text_config", None)
        self._padding = "max_length" if self._model_type in MAX_LENGTH_PADDING else "longest"
        limits = [getattr(text_config, "max_position_embeddings", None), getattr(self.tokenizer, "model_max_length", None)]
        self._max_length = min(int(n) for n in limits if n and int(n) < 1_000_000) if any(limits) else None
        vision_config = getattr(config, "vision_config", config)
        self._patch = getattr(vision_config, "patch_size", None)

    def make_img_transform(self) -> Callable:
        return self._transform

    def _patches(self, tokens: Tensor | None, batch: Tensor) -> Tensor | None:
        """The patch tokens of `tokens` (prefix tokens dropped), when the patch grid says how many there are."""
        if tokens is None or tokens.ndim != 3 or not isinstance(self._patch, int):
            return None
        n = (batch.shape[-2] // self._patch) * (batch.shape[-1] // self._patch)
        return tokens[:, tokens.shape[1] - n :] if 0 < n <= tokens.shape[1] else None

    def img_encode(self, batch: Float[Tensor, "batch 3 height width"]) -> EncodedImgBatch:
        if hasattr(self.model, "get_image_features"):
            out = self.model.get_image_features(pixel_values=batch)
            if isinstance(out, Tensor):  # older transformers return the embedding alone
                return EncodedImgBatch(out, None)
            return EncodedImgBatch(out.pooler_output, self._patches(out.last_hidden_state, batch))
        out = self.model(pixel_values=batch)
        tokens = getattr(out, "last_hidden_state", None)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None or pooled.ndim != 2:
            pooled = tokens[:, 0] if tokens is not None and tokens.ndim == 3 else pooled.flatten(1)
        return EncodedImgBatch(pooled, self._patches(tokens, batch))

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """The tokenizer's inputs for `texts`, padded as the model was trained (see the module docstring)."""
        if self.tokenizer is None:
            raise BackboneError(f'hf:{self.ckpt} ({self._model_type}) has no text tower; use it with method = "cvml".')
        kwargs: dict = {"padding": self._padding, "truncation": True, "return_tensors": "pt"}
        if self._max_length:
            kwargs["max_length"] = self._max_length
        enc = self.tokenizer(list(texts), **kwargs)
        return {k: enc[k] for k in ("input_ids", "attention_mask") if k in enc}

    def txt_encode(self, texts: list[str]) -> Float[Tensor, "n dim"]:
        """Embed captions or class prompts with `get_text_features` (unnormalised)."""
        inputs = self.tokenize(texts)
        device = next(self.model.parameters()).device
        out = self.model.get_text_features(**{k: v.to(device) for k, v in inputs.items()})
        return out if isinstance(out, Tensor) else out.pooler_output

    @property
    def logit_scale(self) -> Tensor:
        """The learned temperature, log-space (open_clip's convention); exp() of it multiplies cosine similarities."""
        if not hasattr(self.model, "logit_scale"):
            raise BackboneError(f"hf:{self.ckpt} ({self._model_type}) has no logit scale.")
        return self.model.logit_scale

    @property
    def logit_bias(self) -> Tensor | None:
        """SigLIP's learned logit bias; None for models without one (CLIP)."""
        return getattr(self.model, "logit_bias", None)

    def weights_identity(self) -> str:
        from biobench.weights import folder_digest, hub_snapshot

        if not self._pretrained:
            return state_dict_digest(self)
        folder = local_dir(self.ckpt)
        if folder is not None:
            return "files:" + folder_digest(folder)
        snap = hub_snapshot(self._source, self._revision)
        if snap is not None:
            return f"hub:{self._source}@{snap[0]}"
        return state_dict_digest(self)
