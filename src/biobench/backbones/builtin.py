"""Weight-free backbones that run anywhere, offline: `builtin:pixel-stats` and `builtin:random-vit`.

They exist for the demo, for tests, and as floors on a leaderboard: a foundation model
that does not beat colour histograms on a task has learned nothing useful for it.
"""

from __future__ import annotations

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
            raise BackboneError(f"builtin org has no checkpoint '{ckpt}'; use 'pixel-stats' or 'random-vit'.")

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
            raise BackboneError(f"builtin org has no checkpoint '{ckpt}'; use 'pixel-stats' or 'random-vit'.")
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


def _square_tensor(size: int, *, normalize: bool):
    """Resize to size x size and convert to a [0, 1] tensor (or [-1, 1] with `normalize`)."""
    from torchvision import transforms  # imported on use: torchvision costs a second at start-up

    steps = [transforms.Resize((size, size), antialias=True), transforms.ToTensor()]
    if normalize:
        steps.append(transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    return transforms.Compose(steps)


_CKPTS: dict[str, type[VisionBackbone]] = {"pixel-stats": PixelStats, "random-vit": RandomViT}


class Builtin(VisionBackbone):
    """Weight-free backbones: `pixel-stats` (colour and texture statistics) and `random-vit` (tiny seeded random ViT)."""

    @classmethod
    def check_ckpt(cls, ckpt: str, pretrained: bool = True) -> None:
        if ckpt not in _CKPTS:
            raise BackboneError(f"builtin org has no checkpoint '{ckpt}'; choose one of {sorted(_CKPTS)}.")

    def __new__(cls, ckpt: str, *, pretrained: bool = True):
        cls.check_ckpt(ckpt, pretrained)
        return _CKPTS[ckpt](ckpt, pretrained=pretrained)
