"""`Examples`: what a layout reader returns and every route consumes.

An `Examples` value pairs the images to embed (an `ImageSet`, each image once) with a
table of examples, one row per (example, image):

| column    | meaning |
|-----------|---------|
| `id`      | example id, unique within its sub-task (rows sharing an id are one pooled example) |
| `image`   | row index into `images` |
| `label`   | class index (int), or a multi-hot list for multi-label tasks |
| `split`   | `train` or `test` |
| `subtask` | optional: the sub-task (NeWT task, Ages setting); one probe per sub-task |
| `group`   | optional: cluster for the bootstrap (individual, video) |

plus any columns the task lists in `info` (copied into each stored prediction and broken
down into sub-scores). Images may serve several examples (an Ages image is a test image
of two settings) and an example may pool several images (a KABR clip's frames).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import polars as pl

from biobench.errors import DataError
from biobench.images import ImageSet

SPLITS = ("train", "test")
NO_SUBTASK = ""
"""The sub-task name of every row when a task has none."""


@dataclasses.dataclass(frozen=True)
class Examples:
    """A task's images and examples (see the module docstring for the table's columns)."""

    images: ImageSet
    """Every image to embed, once."""
    table: pl.DataFrame
    """One row per (example, image)."""
    classnames: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    """Sub-task ('' when there are none) -> class names by label index (MLLM prompts, sub-scores)."""
    info: tuple[str, ...] = ()
    """Extra table columns stored with each prediction and broken down into sub-scores."""
    subtask_label: str = "task"
    """What a sub-task is called in predictions and sub-scores ('task', 'setting', ...)."""
    pool: Literal["mean", "max"] | None = None
    """How the images of one example combine into one feature vector (None: one image per example)."""
    skipped: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Counted skips: reason -> how many rows of the dataset the reader left out (an image missing, an empty trait...).
    The routes store them in each report's sub-scores under `skipped`, beside any the evaluation itself counts."""

    def __post_init__(self) -> None:
        t = self.table
        missing = [c for c in ("id", "image", "label", "split", *self.info) if c not in t.columns]
        if missing:
            raise ValueError(f"Examples of {self.images.name}: table lacks column(s) {missing}.")
        bad_skips = {k: v for k, v in self.skipped.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0}
        if bad_skips:
            raise ValueError(f"Examples of {self.images.name}: skipped counts must be non-negative ints; got {bad_skips}.")
        if t.height == 0:
            raise DataError(f"{self.images.name}: the dataset lists no examples.")
        bad = t.filter(~pl.col("split").is_in(SPLITS))
        if bad.height:
            raise ValueError(f"Examples of {self.images.name}: split must be train or test; {bad['id'][0]} has {bad['split'][0]!r}.")
        idx = t["image"].to_numpy()
        if idx.min() < 0 or idx.max() >= len(self.images):
            raise ValueError(f"Examples of {self.images.name}: image index out of range 0..{len(self.images) - 1}.")
        if self.pool is None:
            keys = [c for c in ("subtask", "id") if c in t.columns]
            dupes = t.filter(pl.struct(keys).is_duplicated())
            if dupes.height:
                first = dupes.row(0, named=True)
                n = t.filter(pl.all_horizontal([pl.col(k) == first[k] for k in keys])).height
                raise DataError(f"{self.images.name}: example id {first['id']} appears {n} times; ids must be unique.")

    @property
    def subtasks(self) -> list[str]:
        """Sub-task names in order of first appearance ([''] when the task has none)."""
        if "subtask" not in self.table.columns:
            return [NO_SUBTASK]
        return self.table["subtask"].unique(maintain_order=True).to_list()

    def labels(self, table: pl.DataFrame | None = None) -> np.ndarray:
        """The label column as an array: (n,) class indices, or (n, k) multi-hot."""
        col = (self.table if table is None else table)["label"]
        if isinstance(col.dtype, (pl.List, pl.Array)):
            return np.asarray(col.to_list(), dtype=np.int64)
        return col.to_numpy().astype(np.int64)

    def names(self, subtask: str) -> Sequence[str]:
        """Class names of `subtask` ('' = the task's only set)."""
        return self.classnames.get(subtask) or self.classnames.get(NO_SUBTASK) or ()


def one_per_image(
    images: ImageSet,
    labels: Sequence | np.ndarray,
    splits: Sequence[str],
    *,
    columns: Mapping[str, Sequence] | None = None,
    **kwargs,
) -> Examples:
    """Examples with one row per image, ids the images' ids; `columns` adds table columns (subtask, group, info...)."""
    labels = np.asarray(labels, dtype=np.int64)
    data: dict[str, object] = {
        "id": list(images.ids),
        "image": np.arange(len(images), dtype=np.int64),
        "label": labels if labels.ndim == 1 else labels.tolist(),  # multi-hot rows become a list column
        "split": list(splits),
    }
    data.update(columns or {})
    return Examples(images, pl.DataFrame(data), **kwargs)
