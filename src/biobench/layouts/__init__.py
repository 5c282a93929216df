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
    """The error for a dataset file or folder that is not there (saying so when `data` is empty or holds another task's dataset)."""
    return DataError(
        f"{task}: {path} not found. {what_is_there(task, Path(data))}Download the dataset with `biobench download {task} --dir {data}`, "
        f"or write a small generated copy with `biobench fixture {task} --dir {data}`."
    )


def what_is_there(task: str, data: Path) -> str:
    """A sentence on what `data` holds instead: nothing, or the files of another registered task."""
    if data.is_dir() and not any(data.iterdir()):
        return f"{data} is empty (what an interrupted or failed download leaves). "
    if not data.is_dir():
        return ""
    from biobench.tasks import get_task, task_names

    def signature(name: str) -> tuple[str, ...]:
        return tuple(r.members[0] for r in get_task(name).resources if r.members)

    mine = signature(task) if task in task_names() else ()
    for other in task_names():
        sig = signature(other)
        if other == task or not sig or sig == mine:
            continue
        found = [next(iter(data.glob(pattern)), None) for pattern in sig]
        if all(found):
            return (
                f"{data} holds a {other} dataset (found {found[0].relative_to(data)}); if that is what you meant, "
                f'give it as {other} = "{data}" under [data]. '
            )
    return ""


def require_files(task: str, paths: Sequence[Path], items: Sequence[str], source: Path) -> None:
    """Raise a `DataError` listing the files `source` lists (as `items`) that are not on disk."""
    gone = [(item, p) for item, p in zip(items, paths, strict=True) if not Path(p).is_file()]
    if gone:
        shown = "\n  ".join(f"{item}: {p}" for item, p in gone[:5])
        raise DataError(
            f"{task}: {len(gone)} of {len(paths)} images listed in {source} are missing, e.g.\n  {shown}\n"
            "Re-download the dataset, or remove those rows from the file."
        )
