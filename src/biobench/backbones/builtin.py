"""Weight-free backbones that run anywhere, offline: `builtin:pixel-stats`, `builtin:random-vit` and `builtin:colour-clip`.

They exist for the demo, for tests, and as floors on a leaderboard: a foundation model
that does not beat colour histograms on a task has learned nothing useful for it.
"""

from __future__ import annotations

import re

import torch
from jaxtyping import Float
from torch import Tensor

from biobench.backbones.base import EncodedImgBatch, VisionBackbone
from biobench.errors import BackboneError


class PixelStats(VisionBackbone):
    """Colour histograms, channel moments and gradient energy of a 64x64 thumbnail.

    Features (60 dims): a 16-bin histogram per RGB channel (fractions of pixels), the
    mean and standard deviation per channel, and the mean absolute horizontal and
    vertical differences per channel (a crude texture measure).
    """

    VERSION = "1"
    N_BINS = 16
    SIZE = 64

    def __init__(self, ckpt: str = "pixel-stats", *, pretrained: bool = True):
        super().__init__()
        if ckpt != "pixel-stats":
            raise BackboneError(f"builtin org has no checkpoint '{ckpt}'; use one of {sorted(_CKPTS)}.")

    def make_img_transform(self):
        return _square_tensor(self.SIZE, normalize=False)

    def weights_identity(self) -> str:
        return f"pixel-stats/v{self.VERSION}"

    def img_encode(self, batch: Float[Tensor, "batch 3 height width"]) -> EncodedImgBatch:
        x = batch.float().clamp(0.0, 1.0)
        b, c, h, w = x.shape
        bins = (x * self.N_BINS).long().clamp_(max=self.N_BINS - 1).reshape(b, c, h * w)
        hist = torch.zeros(b, c, self.N_BINS, device=x.device)
        hist.scatter_add_(2, bins, torch.ones_like(bins, dtype=hist.dtype))
        hist = hist / (h * w)
        flat = x.reshape(b, c, h * w)
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(2, 3))
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(2, 3))
        feats = torch.cat([hist.reshape(b, -1), flat.mean(2), flat.std(2), dx, dy], dim=1)
        return EncodedImgBatch(feats, None)


class RandomViT(VisionBackbone):
    """A tiny ViT (64x64 input, 16x16 patches, width 96, depth 2) with seeded random weights.

    It exercises the whole ViT path (CLS token, patch tokens, normalisation) in well
    under a second per hundred images on a CPU.
    """

    SIZE = 64
    SEED = 0

    def __init__(self, ckpt: str = "random-vit", *, pretrained: bool = True):
        super().__init__()
        if ckpt != "random-vit":
            raise BackboneError(f"builtin org has no checkpoint '{ckpt}'; use one of {sorted(_CKPTS)}.")
        import timm

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.SEED)
            self.model = timm.models.vision_transformer.VisionTransformer(
                img_size=self.SIZE, patch_size=16, embed_dim=96, depth=2, num_heads=3, num_classes=0
            )

    def make_img_transform(self):
        return _square_tensor(self.SIZE, normalize=True)

    def img_encode(self, batch: Float[Tensor, "batch 3 height width"]) -> EncodedImgBatch:
        tokens = self.model.forward_features(batch)
        n_prefix = self.model.num_prefix_tokens
        return EncodedImgBatch(tokens[:, 0], tokens[:, n_prefix:])


class ColourClip(VisionBackbone):
    """A weight-free CLIP: images and texts both become "how much of each named colour".

    Image vector: for each of the `PALETTE` colours, the share of a 32x32 thumbnail's pixels
    nearest to it (a soft assignment), centred by subtracting the uniform share. Text vector:
    how often each colour is named in the text (English and Latin words: "red", "rubra",
    "caeruleus", ...), centred the same way; a text naming no colour is the zero vector, so
    it matches nothing. A caption or class name that names the dominant colour of an image
    scores highest: zero-shot, retrieval and re-ranking fixtures whose names carry colour
    words are solved offline, well above chance, and not at all once names are shuffled.
    """

    VERSION = "1"
    SIZE = 32
    TEMPERATURE = 0.02
    PALETTE: dict[str, tuple[float, float, float]] = {
        "red": (0.85, 0.1, 0.1), "orange": (0.95, 0.55, 0.1), "yellow": (0.95, 0.9, 0.15), "green": (0.15, 0.7, 0.2),
        "blue": (0.15, 0.25, 0.85), "purple": (0.55, 0.2, 0.7), "pink": (0.95, 0.6, 0.75), "brown": (0.45, 0.28, 0.12),
        "black": (0.05, 0.05, 0.05), "white": (0.95, 0.95, 0.95), "grey": (0.5, 0.5, 0.5),
    }  # fmt: skip
    """Colour name -> RGB in [0, 1]."""
    WORDS: dict[str, str] = {
        "gray": "grey", "violet": "purple", "ruber": "red", "rubra": "red", "rubrum": "red", "aurantiacus": "orange",
        "flavus": "yellow", "flava": "yellow", "flavum": "yellow", "luteus": "yellow", "viridis": "green", "caeruleus": "blue",
        "caerulea": "blue", "cyaneus": "blue", "purpureus": "purple", "purpurea": "purple", "roseus": "pink", "rosea": "pink",
        "fuscus": "brown", "fusca": "brown", "brunneus": "brown", "niger": "black", "nigra": "black", "nigrum": "black",
        "albus": "white", "alba": "white", "album": "white", "cinereus": "grey", "cinerea": "grey",
    }  # fmt: skip
    """Other words (synonyms, Latin epithets) for the palette's colours."""

    def __init__(self, ckpt: str = "colour-clip", *, pretrained: bool = True):
        super().__init__()
        if ckpt != "colour-clip":
            raise BackboneError(f"builtin org has no checkpoint '{ckpt}'; use one of {sorted(_CKPTS)}.")
        self.register_buffer("palette", torch.tensor(list(self.PALETTE.values())), persistent=False)

    @classmethod
    def has_text_tower(cls, ckpt: str) -> bool:
        return True

    def make_img_transform(self):
        return _square_tensor(self.SIZE, normalize=False)

    def weights_identity(self) -> str:
        return f"colour-clip/v{self.VERSION}"

    def img_encode(self, batch: Float[Tensor, "batch 3 height width"]) -> EncodedImgBatch:
        x = batch.float().clamp(0.0, 1.0).flatten(2).transpose(1, 2)  # (b, pixels, 3)
        dist = ((x[:, :, None, :] - self.palette.to(x.device)[None, None]) ** 2).sum(-1)
        share = torch.softmax(-dist / self.TEMPERATURE, dim=-1).mean(1)
        return EncodedImgBatch(share - 1.0 / len(self.PALETTE), None)

    def txt_encode(self, texts: list[str]) -> Float[Tensor, "n dim"]:
        names = list(self.PALETTE)
        out = torch.zeros(len(texts), len(names))
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                colour = word if word in self.PALETTE else self.WORDS.get(word)
                if colour is not None:
                    out[i, names.index(colour)] += 1.0
        named = out.sum(1, keepdim=True) > 0
        return torch.where(named, out / out.sum(1, keepdim=True).clamp(min=1) - 1.0 / len(names), out).to(self.palette.device)


def _square_tensor(size: int, *, normalize: bool):
    """Resize to size x size and convert to a [0, 1] tensor (or [-1, 1] with `normalize`)."""
    from torchvision import transforms  # imported on use: torchvision costs a second at start-up

    steps = [transforms.Resize((size, size), antialias=True), transforms.ToTensor()]
    if normalize:
        steps.append(transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    return transforms.Compose(steps)


_CKPTS: dict[str, type[VisionBackbone]] = {"pixel-stats": PixelStats, "random-vit": RandomViT, "colour-clip": ColourClip}


class Builtin(VisionBackbone):
    """Weight-free backbones: `pixel-stats` (colour and texture statistics), `random-vit` (tiny seeded random ViT) and
    `colour-clip` (colour shares of images and colour words of texts: a CLIP with a text tower, for the text route)."""

    @classmethod
    def has_text_tower(cls, ckpt: str) -> bool:
        return ckpt in _CKPTS and _CKPTS[ckpt].has_text_tower(ckpt)

    @classmethod
    def check_ckpt(cls, ckpt: str, pretrained: bool = True) -> None:
        if ckpt not in _CKPTS:
            raise BackboneError(f"builtin org has no checkpoint '{ckpt}'; choose one of {sorted(_CKPTS)}.")

    def __new__(cls, ckpt: str, *, pretrained: bool = True):
        cls.check_ckpt(ckpt, pretrained)
        return _CKPTS[ckpt](ckpt, pretrained=pretrained)
