"""Image sets: the list of images a task needs embedded, with stable per-image keys.

A task describes its images as an `ImageSet` (ids, paths, optional crop boxes). The
embedding cache identifies each image by a key built from its resolved path, size and
modification time (or, on request, a hash of its bytes) plus the crop, so that a cached
vector is reused exactly when the pixels it came from are unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from PIL import Image, UnidentifiedImageError

from biobench.errors import DataError

KeyMode = Literal["stat", "content"]

Crop = tuple[float, float, float, float]
"""A crop box `(left, top, right, bottom)` in pixels, as PIL's `Image.crop` takes it."""


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """The images a task needs features for, in the order its features will come back."""

    name: str
    """Dataset label shown by `biobench cache ls`, usually the task name."""
    ids: Sequence[str]
    """Example id of each image, unique within the set."""
    paths: Sequence[Path]
    """File of each image."""
    crops: Sequence[Crop | None] | None = None
    """Optional crop box per image (e.g. a bounding box); None = the whole image."""
    table: pl.DataFrame | None = dataclasses.field(default=None, compare=False, repr=False)
    """The task's metadata, one row per image in the same order (labels, splits, groups)."""

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.paths):
            raise ValueError(f"ImageSet {self.name}: {len(self.ids)} ids but {len(self.paths)} paths.")
        if self.crops is not None and len(self.crops) != len(self.paths):
            raise ValueError(f"ImageSet {self.name}: {len(self.crops)} crops but {len(self.paths)} paths.")
        if self.table is not None and self.table.height != len(self.paths):
            raise ValueError(f"ImageSet {self.name}: {self.table.height} table rows but {len(self.paths)} paths.")

    def __len__(self) -> int:
        return len(self.paths)

    def crop(self, i: int) -> Crop | None:
        return None if self.crops is None else self.crops[i]

    def keys(self, mode: KeyMode = "stat") -> np.ndarray:
        """One 32-character hex key per image (numpy `S32`), raising `DataError` for missing files."""
        missing: list[str] = []
        keys = np.empty(len(self), dtype="S32")
        for i, path in enumerate(self.paths):
            try:
                keys[i] = image_key(path, self.crop(i), mode)
            except FileNotFoundError:
                missing.append(str(path))
        if missing:
            shown = "\n  ".join(missing[:5])
            raise DataError(
                f"{len(missing)} of {len(self)} images of '{self.name}' are missing, e.g.\n  {shown}\n"
                "Re-download the dataset (`biobench download TASK --dir DIR`) or fix the paths in its metadata."
            )
        return keys

    def fingerprint(self, keys: np.ndarray) -> str:
        """A digest of the whole set (its keys in order)."""
        return hashlib.sha256(keys.tobytes()).hexdigest()


def image_key(path: Path, crop: Crop | None, mode: KeyMode = "stat") -> bytes:
    """Key of one image: resolved path + size + mtime ("stat"), or its bytes ("content"), plus the crop."""
    h = hashlib.blake2b(digest_size=16)
    if mode == "stat":
        st = os.stat(path)
        h.update(f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    elif mode == "content":
        with open(path, "rb") as fd:
            for block in iter(lambda: fd.read(1 << 20), b""):
                h.update(block)
    else:
        raise ValueError(f"Unknown image key mode {mode!r}; use 'stat' or 'content'.")
    h.update(f"\0{crop}".encode())
    return h.hexdigest().encode()


def load_rgb(path: Path, crop: Crop | None = None) -> Image.Image:
    """Open an image as RGB, cropping if asked; a `DataError` names any unreadable file."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"Image file not found: {path}. Re-download the dataset or fix its metadata.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"Cannot decode image {path}: {err}. The file is corrupt or not an image; "
            "re-download it, or remove it from the dataset's metadata."
        ) from None
    if crop is not None:
        img = img.crop(tuple(int(round(c)) for c in crop))
    return img
