"""Dataset readers shared by tasks: class folders, CSV tables, COCO JSON.

Each reader checks what it reads and raises a `DataError` that names the file, the
column or the item at fault and says how to fix it; `missing_data` is the one message
for a dataset that is not there (it suggests `biobench download` and `biobench fixture`).

- `folders.read_class_folders`: `ROOT/<split>/<class>/*.{jpg,png,...}`.
- `tables.read_csv` / `tables.require_columns`: columns located by name.
- `coco.read_coco`: COCO JSON (images, annotations, categories, optional bbox crops).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from biobench.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"})
"""Image files the readers pick up, matched case-insensitively."""


def missing_data(task: str, data: Path, path: Path) -> DataError:
    """The error for a dataset file or folder that is not there."""
    return DataError(
        f"{task}: {path} not found. Download the dataset with `biobench download {task} --dir {data}`, "
        f"or write a small generated copy with `biobench fixture {task} --dir {data}`."
    )


def require_files(task: str, paths: Sequence[Path], items: Sequence[str], source: Path) -> None:
    """Raise a `DataError` listing the files `source` lists (as `items`) that are not on disk."""
    gone = [(item, p) for item, p in zip(items, paths, strict=True) if not Path(p).is_file()]
    if gone:
        shown = "\n  ".join(f"{item}: {p}" for item, p in gone[:5])
        raise DataError(
            f"{task}: {len(gone)} of {len(paths)} images listed in {source} are missing, e.g.\n  {shown}\n"
            "Re-download the dataset, or remove those rows from the file."
        )
