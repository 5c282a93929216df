"""An open_clip CLIP with BioCAP's second visual projection, the combined loss, and export.

BioCAP keeps open_clip's towers and adds a caption projection beside the image tower's own (taxonomic)
projection, with its own logit scale. Here the CLIP's `visual.proj` moves into `proj_tax`, a copy of it
starts `proj_caption`, and the image tower returns pooled features that both projections read.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

TINY = "biobench-tiny-clip"
FEATURE_KEYS = ("image_tax", "image_caption", "text_names", "text_captions")
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
"""A CPU-sized CLIP (about 1.7 M parameters, most in the token embedding) for tests and fixtures."""


def register_tiny() -> str:
    """Register `TINY` with open_clip (idempotent); returns its name."""
    import open_clip

    if TINY not in open_clip.list_models():
        path = Path(tempfile.mkdtemp(prefix="biobench-oc-")) / f"{TINY}.json"
        path.write_text(json.dumps(TINY_CONFIG))
        open_clip.add_model_config(path)
    return TINY


class DualProjectionCLIP(nn.Module):
    """open_clip CLIP + caption projection and caption logit scale (BioCAP's dual projectors)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        proj = clip.visual.proj
        if not isinstance(proj, nn.Parameter):
            raise ValueError(f"{type(clip.visual).__name__} has no projection matrix `visual.proj`; BioCAP training needs a ViT CLIP.")
        self.clip = clip
        self.proj_tax = nn.Parameter(proj.detach().clone())
        self.proj_caption = nn.Parameter(proj.detach().clone())
        clip.visual.proj = None  # the tower now returns pooled features; both heads project them
        self.logit_scale_caption = nn.Parameter(clip.logit_scale.detach().clone())

    def forward(self, images: Tensor, names: Tensor, captions: Tensor) -> dict[str, Tensor]:
        pooled = self.clip.visual(images)
        if isinstance(pooled, tuple):
            pooled = pooled[0]
        text = self.clip.encode_text(torch.cat([names, captions]), normalize=True)
        n = names.shape[0]
        return {
            "image_tax": F.normalize(pooled @ self.proj_tax, dim=-1),
            "image_caption": F.normalize(pooled @ self.proj_caption, dim=-1),
            "text_names": text[:n],
            "text_captions": text[n:],
            "scale_tax": self.clip.logit_scale.exp(),
            "scale_caption": self.logit_scale_caption.exp(),
        }

    @torch.no_grad()
    def clamp_scales(self) -> None:
        """Clamp both logit scales to [0, ln 100], as CLIP and BioCAP do after each step."""
        self.clip.logit_scale.clamp_(0, math.log(100))
        self.logit_scale_caption.clamp_(0, math.log(100))

    def export_state(self, projector: str) -> dict[str, Tensor]:
        """A plain open_clip CLIP state dict whose `visual.proj` (and logit scale) is the chosen head's."""
        if projector not in ("tax", "caption"):
            raise ValueError(f"projector must be 'tax' or 'caption', not {projector!r}")
        state = {k.removeprefix("clip."): v.detach().cpu().clone() for k, v in self.state_dict().items() if k.startswith("clip.")}
        state["visual.proj"] = (self.proj_tax if projector == "tax" else self.proj_caption).detach().cpu().clone()
        if projector == "caption":
            state["logit_scale"] = self.logit_scale_caption.detach().cpu().clone()
        return state


def contrastive(
    image: Float[Tensor, "n d"],
    text: Float[Tensor, "n d"],
    scale: Tensor,
    *,
    rank: int,
    world: int,
    local_loss: bool,
    gather_with_grad: bool,
) -> Tensor:
    """open_clip's symmetric InfoNCE, gathering features across ranks (`open_clip.loss.ClipLoss`)."""
    from open_clip.loss import ClipLoss

    loss = ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad, rank=rank, world_size=world)
    return loss(image, text, scale)


def dual_loss(
    out: dict[str, Tensor],
    caption_weight: float,
    *,
    rank: int = 0,
    world: int = 1,
    local_loss: bool = False,
    gather_with_grad: bool = True,
) -> dict[str, Tensor]:
    """loss = L(tax head, name text) + caption_weight * L(caption head, caption text)."""
    kw = dict(rank=rank, world=world, local_loss=local_loss, gather_with_grad=gather_with_grad)
    tax = contrastive(out["image_tax"], out["text_names"], out["scale_tax"], **kw)
    cap = contrastive(out["image_caption"], out["text_captions"], out["scale_caption"], **kw)
    return {"loss": tax + caption_weight * cap, "loss_tax": tax, "loss_caption": cap}


def build(arch: str, pretrained: str | None = None, *, grad_checkpointing: bool = False):
    """(DualProjectionCLIP, train transform, eval transform, tokenizer, model config) for an open_clip arch,
    pretrained tag or `hf-hub:` / `local-dir:` checkpoint."""
    import open_clip

    if arch == TINY:
        register_tiny()
    clip, train_tf, eval_tf = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
    if grad_checkpointing:
        clip.set_grad_checkpointing(True)
    tokenizer = open_clip.get_tokenizer(arch)
    return DualProjectionCLIP(clip), train_tf, eval_tf, tokenizer, model_config(arch)


def model_config(arch: str) -> dict:
    """The open_clip model config of `arch` (read back from a `local-dir:`/`hf-hub:` checkpoint's json)."""
    import open_clip

    if arch.startswith("local-dir:"):
        return json.loads((Path(arch.removeprefix("local-dir:")) / "open_clip_config.json").read_text())["model_cfg"]
    if arch.startswith("hf-hub:"):
        from open_clip.factory import _get_hf_config

        return _get_hf_config(arch.removeprefix("hf-hub:"))["model_cfg"]
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(f"open_clip has no model config '{arch}'.")
    return cfg


def export(model: DualProjectionCLIP, cfg: dict, out: Path, projector: str, preprocess: dict | None = None) -> Path:
    """Write `out/` as an open_clip `local-dir:` checkpoint (open_clip_config.json + open_clip_pytorch_model.bin)."""
    from biobench import atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = __import__("io").BytesIO()
    torch.save(model.export_state(projector), buf)
    atomic.write_bytes(out / "open_clip_pytorch_model.bin", buf.getvalue())
    doc = {"model_cfg": cfg, "preprocess_cfg": preprocess or {}, "biobench": {"projector": projector}}
    atomic.write_text(out / "open_clip_config.json", json.dumps(doc, indent=1))
    return out
