"""The fast preprocessing path: JPEG bytes -> uint8 tensors -> the backbone's eval transform as tensor ops.

The exact path hands every image to the backbone's own transform (PIL decode, PIL
resize, `ToTensor`, `Normalize`). The fast path reads the same transform and replays it
on tensors: `torchvision.io.decode_jpeg` (batched, on the GPU under CUDA; libjpeg-turbo
on the CPU otherwise), then crop box, `Resize`, `CenterCrop` on uint8 images with the
same output-size arithmetic (`torchvision.transforms.v2.functional`, antialiased like
PIL), then a batched `/255` and `Normalize` in float32. `plan(transform)` maps a
transform, or says why it cannot (a step it does not know, an interpolation PIL and
torch do not share), and the engine then falls back to the exact path with that reason
logged. Per image, anything that is not a JPEG, or that the tensor decoder rejects, goes
through the exact PIL path instead, so the fast path never fails where the exact one
succeeds.

How close: decoders differ in IDCT and chroma upsampling and the resampling kernels
round differently, so pixels differ by about one grey level; `tests/test_fastpath.py`
bounds the mean absolute difference after normalisation (`MEAN_ABS_TOLERANCE`) and the
features' cosine similarity.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import torch
from jaxtyping import UInt8
from torch import Tensor

from biobench.images import Crop

# torchvision 0.29 deprecates its image decoders in favour of TorchCodec; they work, and are what this path is built on.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning)

MEAN_ABS_TOLERANCE = 0.03
"""Largest mean absolute difference, after normalisation, between the fast and exact paths' tensors that the tests accept
(two grey levels: 1/255 divided by a CLIP std of 0.27 is 0.015), a bound meant to hold for the GPU decoder too. With the
CPU decoder (libjpeg-turbo, as PIL's) the decoded pixels are identical and the mean difference is below 0.0002."""

_INTERPOLATIONS = ("bilinear", "bicubic")
"""Resampling modes where torch's antialiased kernels follow PIL's (nearest does not: PIL's is torch's nearest-exact)."""


@dataclasses.dataclass(frozen=True)
class Resize:
    size: int | tuple[int, ...]
    interpolation: str
    max_size: int | None = None


@dataclasses.dataclass(frozen=True)
class CenterCrop:
    size: tuple[int, int]
    anchor: str = "round"
    """Where the crop starts: "round" (torchvision: round((h - size) / 2), half to even) or "floor"
    (`transformers`' processors: (h - size) // 2); they differ by a pixel when h - size is odd."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """A transform as tensor steps: geometry on uint8 images, then `/255` and an optional normalisation."""

    geometry: tuple[Resize | CenterCrop, ...]
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None

    def describe(self) -> str:
        return repr(self)


def plan(transform: object) -> Plan | str:
    """The tensor replay of `transform`, or the reason it has none.

    Understood: a torchvision `Compose` (v1 or v2) of `Resize` / `CenterCrop` (before the tensor
    conversion), `ToTensor` or timm / open_clip's `MaybeToTensor`, open_clip's `MaybeConvertMode("RGB")`
    (images arrive as RGB already), and `Normalize` (after it), which is how open_clip and timm build
    eval transforms; and torchvision's `ImageClassification` preset (`weights.transforms()`)."""
    from torchvision import transforms as T

    own = getattr(transform, "fast_plan", None)
    if callable(own):  # a transform that states its own replay (`biobench.backbones.hf.HfImageTransform`)
        return own()
    name = type(transform).__name__
    if name == "ImageClassification" and hasattr(transform, "crop_size"):
        interp = _interpolation(transform.interpolation)
        if interp not in _INTERPOLATIONS:
            return f"ImageClassification uses {interp} interpolation, which torch does not resample as PIL does"
        if getattr(transform, "antialias", True) is False:
            return "ImageClassification has antialias=False, which PIL cannot do"
        return Plan(
            (Resize(_size(transform.resize_size), interp), CenterCrop(_pair(transform.crop_size))),
            _triple(transform.mean),
            _triple(transform.std),
        )
    steps = list(getattr(transform, "transforms", None) or []) if "Compose" in name else [transform]
    geometry: list[Resize | CenterCrop] = []
    mean = std = None
    tensor = False
    for step in steps:
        kind = type(step).__name__
        if kind == "Resize" and isinstance(step, torch.nn.Module):
            interp = _interpolation(step.interpolation)
            if tensor:
                return "Resize after the tensor conversion"
            if interp not in _INTERPOLATIONS:
                return f"Resize uses {interp} interpolation, which torch does not resample as PIL does"
            if getattr(step, "antialias", True) is False:
                return "Resize has antialias=False, which PIL cannot do"
            geometry.append(Resize(_size(step.size), interp, step.max_size))
        elif kind == "CenterCrop" and isinstance(step, torch.nn.Module):
            if tensor:
                return "CenterCrop after the tensor conversion"
            geometry.append(CenterCrop(_pair(step.size)))
        elif kind == "MaybeConvertMode" and getattr(step, "mode", None) == "RGB":
            continue
        elif kind in ("ToTensor", "MaybeToTensor") or isinstance(step, T.ToTensor):
            if tensor:
                return "two tensor conversions"
            tensor = True
        elif kind == "Normalize" and isinstance(step, torch.nn.Module):
            if not tensor or mean is not None:
                return "Normalize before the tensor conversion, or twice"
            mean, std = _triple(step.mean), _triple(step.std)
        else:
            return f"step {_short(step)} has no tensor equivalent here"
    if not tensor:
        return "no ToTensor step"
    if not any(isinstance(g, CenterCrop) or (isinstance(g, Resize) and isinstance(g.size, tuple) and len(g.size) == 2) for g in geometry):
        return "no fixed output size (a Resize to (h, w) or a CenterCrop), so images cannot be batched"
    return Plan(tuple(geometry), mean, std)


def geometry(image: UInt8[Tensor, "3 h w"], plan: Plan, crop: Crop | None) -> UInt8[Tensor, "3 H W"]:
    """Crop box (as `images.load_rgb` rounds it, zero-padded outside the image), then the plan's resizes and crops."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    if crop is not None:
        left, top, right, bottom = (int(round(c)) for c in crop)
        image = F.crop(image, top, left, bottom - top, right - left)
    for step in plan.geometry:
        if isinstance(step, Resize):
            image = F.resize(
                image,
                list(step.size) if isinstance(step.size, tuple) else [step.size],
                InterpolationMode(step.interpolation),
                step.max_size,
                antialias=True,
            )
        elif step.anchor == "floor":
            image = _floor_crop(image, step.size)
        else:
            image = F.center_crop(image, list(step.size))
    return image


def geometry_many(images: Sequence[UInt8[Tensor, "3 h w"]], plan: Plan, crops: Sequence[Crop | None]) -> list[UInt8[Tensor, "3 H W"]]:
    """`geometry` of each image, images of one shape and crop resized together: one call per group instead of per image
    (on the GPU each call is a handful of kernel launches; a dataset of same-sized photographs needs a few per batch).
    The kernels treat every image of a batch alike, so the result is that of `geometry` image by image."""
    groups: dict[tuple, list[int]] = {}
    for k, (image, crop) in enumerate(zip(images, crops, strict=True)):
        groups.setdefault((tuple(image.shape), crop), []).append(k)
    out: list[Tensor | None] = [None] * len(images)
    for (_, crop), ks in groups.items():
        if len(ks) == 1:
            out[ks[0]] = geometry(images[ks[0]], plan, crop)
            continue
        done = geometry(torch.stack([images[k] for k in ks]), plan, crop)
        for j, k in enumerate(ks):
            out[k] = done[j]
    return out  # type: ignore[return-value]


class PilSteps:
    """The PIL part of a transform: its steps before the tensor conversion, applied in order."""

    def __init__(self, steps: Sequence):
        self.steps = tuple(steps)

    def __call__(self, image):
        for step in self.steps:
            image = step(image)
        return image

    def __repr__(self) -> str:
        return f"PilSteps({list(self.steps)!r})"


def split(transform: object) -> tuple[PilSteps, Plan] | None:
    """(PIL steps, plan) when `transform` is a `Compose` that `plan` replays: `normalise(to_uint8(steps(img)), plan)`
    is then `transform(img)` bit for bit (the same float32 `/255`, subtraction and division as `ToTensor` and
    `Normalize`), with the conversion and normalisation batched. None otherwise (the exact path runs it whole)."""
    planned = plan(transform)
    if isinstance(planned, str) or "Compose" not in type(transform).__name__:
        return None
    steps = list(transform.transforms)  # type: ignore[attr-defined]
    cut = next(k for k, step in enumerate(steps) if type(step).__name__ in ("ToTensor", "MaybeToTensor"))
    return PilSteps(steps[:cut]), planned


def to_uint8(image) -> UInt8[Tensor, "3 H W"]:
    """An RGB PIL image as a uint8 (3, H, W) tensor (one copy, as `ToTensor` makes before its float conversion)."""
    from torchvision.transforms.functional import pil_to_tensor

    if image.mode != "RGB":
        image = image.convert("RGB")
    return pil_to_tensor(image)


def _floor_crop(image: Tensor, size: tuple[int, int]) -> Tensor:
    """A centre crop anchored as `transformers` anchors it: zero-padded (left/top half rounded down) where the image is
    smaller, then started at (h - size) // 2."""
    from torchvision.transforms.v2 import functional as F

    (ch, cw), (h, w) = size, image.shape[-2:]
    if ch > h or cw > w:
        pad = [max(cw - w, 0) // 2, max(ch - h, 0) // 2, (max(cw - w, 0) + 1) // 2, (max(ch - h, 0) + 1) // 2]
        image = F.pad(image, pad, fill=0)
        h, w = image.shape[-2:]
    return F.crop(image, (h - ch) // 2, (w - cw) // 2, ch, cw)


def normalise(batch: UInt8[Tensor, "b 3 H W"], plan: Plan) -> Tensor:
    """`/255` then the plan's `Normalize`, batched in float32 on the batch's device."""
    x = batch.float().div_(255.0)
    if plan.mean is not None:
        mean = torch.tensor(plan.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(plan.std, device=x.device).view(1, 3, 1, 1)
        x.sub_(mean).div_(std)
    return x


def is_plain_jpeg(data: bytes) -> bool:
    """A JPEG with 1 (grey) or 3 (YCbCr/RGB) components: what every tensor decoder turns into RGB the way PIL does."""
    if not data.startswith(b"\xff\xd8"):
        return False
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame
            return i + 9 < n and data[i + 9] in (1, 3)
        i += 2 + length
    return False


def decode(datas: Sequence[bytes], device: torch.device) -> list[Tensor | Exception]:
    """Decode JPEGs to RGB uint8 (3, h, w) tensors on `device` (one batched call on CUDA); an exception per image that fails."""
    from torchvision.io import ImageReadMode, decode_jpeg

    raw = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    where = "cuda" if device.type == "cuda" else "cpu"
    if where == "cuda" and len(raw) > 1:
        try:
            return list(decode_jpeg(raw, mode=ImageReadMode.RGB, device=device))
        except Exception:  # one bad image fails the batch: decode one at a time to find it
            pass
    out: list[Tensor | Exception] = []
    for r in raw:
        try:
            out.append(decode_jpeg(r, mode=ImageReadMode.RGB, device=device if where == "cuda" else "cpu"))
        except Exception as err:
            out.append(err)
    return out


def _interpolation(mode) -> str:
    return getattr(mode, "value", str(mode)).lower()


def _size(size) -> int | tuple[int, ...]:
    if isinstance(size, int):
        return size
    size = tuple(int(s) for s in size)
    return size[0] if len(size) == 1 else size


def _pair(size) -> tuple[int, int]:
    size = _size(size)
    return (size, size) if isinstance(size, int) else (size[0], size[-1])


def _triple(values) -> tuple[float, float, float]:
    values = [float(v) for v in (values.tolist() if isinstance(values, Tensor) else values)]
    return (values[0],) * 3 if len(values) == 1 else tuple(values)  # type: ignore[return-value]


def _short(step: object) -> str:
    text = repr(step).replace("\n", " ")
    return text if len(text) < 80 else text[:77] + "..."
