"""Generated images with a learnable signal, for fixtures in every task's real on-disk format.

An image is smooth random colour noise; its class shifts the mean colour towards a
class-specific hue and overlays stripes of a class-specific frequency and angle. Colour
histograms (`builtin:pixel-stats`) pick the signal up easily, so tests can demand
accuracy well above chance, and near chance once labels are shuffled.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def example_id(rng: np.random.Generator) -> str:
    """A UUID-4 string drawn from `rng` (NeWT and others name images by UUID)."""
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def class_style(group: int, label: int) -> tuple[np.ndarray, float, float]:
    """(RGB tint, stripe frequency, stripe angle) for class `label` of task `group`; deterministic."""
    g = np.random.default_rng([1234, group, label])
    tint = g.uniform(0.15, 0.85, size=3)
    return tint, g.uniform(2.0, 9.0), g.uniform(0.0, np.pi)


def draw(rng: np.random.Generator, group: int, label: int, size: int = 48, strength: float = 0.6) -> Image.Image:
    """One RGB image of class `label` in task `group`; `strength` in [0, 1] sets how visible the class is."""
    coarse = rng.uniform(0.0, 1.0, size=(4, 4, 3))
    noise = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR))
    noise = noise.astype(np.float32) / 255.0
    tint, freq, angle = class_style(group, label)
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    img = (1 - strength) * noise + strength * (0.7 * tint + 0.3 * stripes[..., None])
    img += rng.normal(0.0, 0.03, size=img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")


def save_jpeg(img: Image.Image, path: Path) -> tuple[int, int]:
    """Write a JPEG (creating folders); returns (height, width)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=90)
    return img.height, img.width


def save_mp4(frames: Sequence[Image.Image], path: Path, *, fps: int = 10) -> None:
    """Write `frames` (RGB, equal even sizes) as an H.264 MP4 with PyAV (creating folders)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_image(img)))
        out.mux(stream.encode(None))
