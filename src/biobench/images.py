"""Image sets: the list of images a task needs embedded, with stable per-image keys.

A task describes its images as an `ImageSet` (ids, image references, optional crop
boxes). A reference is an image file (`Path`) or a `TableImage`: an image stored inside a
table file (a Hugging Face parquet shard or Arrow IPC file, see `biobench.layouts.hf`),
named by (file, row, column). The embedding cache identifies each image by a key built
from its resolved path, size and modification time (plus, for a table image, its row and
column), or on request a hash of its bytes, plus the crop, so that a cached vector is
reused exactly when the pixels it came from are unchanged.

Table images are read a block at a time (a parquet row group, or a whole memory-mapped
Arrow IPC file) and the last few blocks are kept per process, so embedding a shard's
images in order reads the shard once, not once per image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:  # only annotations use it: extraction alone (benchmarks/gpu_check.sh) runs without polars
    import polars as pl

from biobench.errors import DataError

KeyMode = Literal["stat", "content"]

Crop = tuple[float, float, float, float]
"""A crop box `(left, top, right, bottom)` in pixels, as PIL's `Image.crop` takes it."""


@dataclasses.dataclass(frozen=True, slots=True)
class TableImage:
    """An image stored in a table file: the Hugging Face image struct `{bytes, path}` in `column` of row `row`.

    `file` is a parquet file or an Arrow IPC file (stream or file format, as `save_to_disk`
    writes). A struct whose `bytes` are null names an image file by `path` instead
    (relative paths are resolved against the table file's folder)."""

    file: Path
    """The table file."""
    row: int
    """Row index within the file (0-based)."""
    column: str = "image"
    """The image column."""

    def __str__(self) -> str:
        return f"{self.file} (row {self.row}, column {self.column})"


ImageRef = Path | TableImage
"""Where an image is: a file, or a row of a table file."""


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """The images a task needs features for, in the order its features will come back."""

    name: str
    """Dataset label shown by `biobench cache ls`, usually the task name."""
    ids: Sequence[str]
    """Example id of each image, unique within the set."""
    paths: Sequence[ImageRef]
    """Where each image is: its file, or a `TableImage` (a row of a parquet / Arrow file)."""
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
        stats: dict[Path, str] = {}  # table file -> its stat prefix, computed once per file
        for i, path in enumerate(self.paths):
            try:
                keys[i] = image_key(path, self.crop(i), mode, stats)
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


def _stat(path: Path) -> str:
    st = os.stat(path)
    return f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}"


def image_key(path: ImageRef, crop: Crop | None, mode: KeyMode = "stat", stats: dict[Path, str] | None = None) -> bytes:
    """Key of one image: resolved path + size + mtime ("stat"), or its bytes ("content"), plus the crop.

    A `TableImage`'s stat key is its table file's, plus its row and column; `stats` memoises
    the file part across the images of one file."""
    h = hashlib.blake2b(digest_size=16)
    if mode == "stat":
        if isinstance(path, TableImage):
            if stats is None or path.file not in stats:
                prefix = _stat(path.file)
                if stats is not None:
                    stats[path.file] = prefix
            else:
                prefix = stats[path.file]
            h.update(f"{prefix}\0row {path.row}\0{path.column}".encode())
        else:
            h.update(_stat(path).encode())
    elif mode == "content":
        if isinstance(path, TableImage):
            h.update(table_image_bytes(path))
        else:
            with open(path, "rb") as fd:
                for block in iter(lambda: fd.read(1 << 20), b""):
                    h.update(block)
    else:
        raise ValueError(f"Unknown image key mode {mode!r}; use 'stat' or 'content'.")
    h.update(f"\0{crop}".encode())
    return h.hexdigest().encode()


def load_rgb(path: ImageRef, crop: Crop | None = None) -> Image.Image:
    """Open an image (a file or a `TableImage`) as RGB, cropping if asked; a `DataError` names any unreadable image."""
    return decode_rgb(read_image_bytes(path), path, crop)


def read_image_bytes(path: ImageRef) -> bytes:
    """The encoded bytes of an image (a file or a `TableImage`); a `DataError` for a missing one."""
    try:
        return table_image_bytes(path) if isinstance(path, TableImage) else Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"Image file not found: {path}. Re-download the dataset or fix its metadata.") from None
    except IsADirectoryError:
        raise DataError(f"Cannot decode image {path}: it is a directory. Fix the dataset's metadata.") from None
    except OSError as err:
        raise DataError(f"Cannot read image {path}: {err}. Check the file's permissions and the disk.") from None


def decode_rgb(data: bytes, path: ImageRef, crop: Crop | None = None) -> Image.Image:
    """Decode the bytes of image `path` as RGB with PIL, cropping if asked; a `DataError` names an undecodable image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"Cannot decode image {path}: {err}. The file is corrupt or not an image; "
            "re-download it, or remove it from the dataset's metadata."
        ) from None
    if crop is not None:
        img = img.crop(tuple(int(round(c)) for c in crop))
    return img


###############
# Table images
###############


def table_image_bytes(ref: TableImage) -> bytes:
    """The encoded image (JPEG, PNG...) that `ref` names; a `DataError` for a row or column that is not there."""
    try:
        st = os.stat(ref.file)
    except FileNotFoundError:
        raise FileNotFoundError(f"Table file not found: {ref.file}") from None
    version = (str(ref.file), st.st_mtime_ns, st.st_size)  # a rewritten file is read anew
    starts, n_rows = _blocks(*version)
    if not 0 <= ref.row < n_rows:
        raise DataError(
            f"Image {ref}: {ref.file} has {n_rows} rows, so row {ref.row} is not there. Re-read the dataset (its files changed?)."
        )
    block = int(np.searchsorted(starts, ref.row, side="right")) - 1
    value = _table_block(*version, ref.column, block)[ref.row - starts[block]].as_py()
    if not isinstance(value, dict) or not value.get("bytes"):
        path = value.get("path") if isinstance(value, dict) else None
        if not path:
            raise DataError(f"Image {ref}: the row holds no image (neither bytes nor a path); remove it from the dataset or re-create it.")
        path = Path(path) if Path(path).is_absolute() else Path(ref.file).parent / path
        return path.read_bytes()
    return value["bytes"]


def _is_parquet(file: str) -> bool:
    return file.endswith(".parquet")


@functools.lru_cache(maxsize=256)
def _blocks(file: str, mtime_ns: int, size: int) -> tuple[np.ndarray, int]:
    """(first row of each block, number of rows) of a table file: parquet row groups, or one block per Arrow file."""
    import pyarrow.parquet as pq

    with _reading(file):
        if _is_parquet(file):
            meta = pq.ParquetFile(file).metadata
            counts = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            return np.cumsum([0, *counts[:-1]]), int(sum(counts))
        return np.zeros(1, dtype=np.int64), read_arrow(file).num_rows


@functools.lru_cache(maxsize=2)
def _table_block(file: str, mtime_ns: int, size: int, column: str, block: int):
    """The image column's values in block `block` of a table file (a parquet row group, or a whole
    memory-mapped Arrow file, no copy); the last two are kept per process (a DataLoader worker
    reads its consecutive batches from one or two blocks at a time)."""
    import pyarrow.parquet as pq

    with _reading(file):
        if _is_parquet(file):
            return pq.ParquetFile(file, memory_map=True).read_row_group(block, columns=[column], use_threads=False).column(column)
        return read_arrow(file, [column]).column(column)


@contextlib.contextmanager
def _reading(file: str):
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowException, OSError, KeyError) as err:
        raise DataError(
            f"Cannot read images from {file}: {err}. The file is damaged or not a parquet / Arrow file; re-download it."
        ) from None


def read_arrow(file: str | Path, columns: Sequence[str] | None = None):
    """An Arrow IPC file (stream format, as `datasets.save_to_disk` writes, or file format), memory-mapped: a pyarrow Table."""
    import pyarrow as pa
    import pyarrow.ipc

    source = pa.memory_map(str(file))
    try:
        table = pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        table = pa.ipc.open_file(source).read_all()
    return table if columns is None else table.select(list(columns))
