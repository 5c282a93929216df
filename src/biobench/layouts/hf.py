"""Hugging Face datasets on disk, read without the `datasets` library (pyarrow + polars).

Three layouts hold the same tables; `find_split` recognises each (in this order):

```
DIR/dataset_dict.json            a DatasetDict saved with `save_to_disk`: {"splits": ["train", ...]}
DIR/<split>/state.json           one split saved with `save_to_disk`: lists its shards (`_data_files`)
DIR/<split>/dataset_info.json    its features (image and ClassLabel columns, class names)
DIR/<split>/data-00000-of-00002.arrow   Arrow IPC stream shards
DIR/state.json (+ shards)        a single Dataset saved with `save_to_disk` (its split in `_split`)
DIR/[...]/<split>-00000-of-00002.parquet   parquet shards, as on the Hub (`data/train-*.parquet`),
DIR/[...]/<split>/*.parquet                or as the Hub's parquet conversion (`default/train/0000.parquet`)
```

(`[...]`: up to two folder levels, e.g. `data/` or `<config>/`.) An image column is a
struct `{bytes, path}`; its images stay in the shards and are named by `TableImage`
(file, row, column), so nothing is extracted to disk. Every bad input is a `DataError`
naming the file: a split that is not there, a shard `state.json` lists that is missing,
an unreadable shard, a column the task needs that a shard lacks.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from biobench.errors import DataError
from biobench.images import ImageSet, TableImage, read_arrow
from biobench.layouts import missing_data


@dataclasses.dataclass(frozen=True)
class HfSplit:
    """One split's shards, in order, and its features."""

    name: str
    """The split's Hugging Face name (train, validation, test, ...)."""
    files: tuple[Path, ...]
    """Its parquet or Arrow shards, in row order."""
    features: dict
    """The `datasets` features (column -> {"_type": "Image" | "ClassLabel" | "Value", ...}); {} when unknown."""

    def class_names(self, column: str) -> tuple[str, ...] | None:
        """The names of a ClassLabel column, by index (None when the features do not say)."""
        feature = self.features.get(column)
        if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and feature.get("names"):
            return tuple(str(n) for n in feature["names"])
        return None


def _read_json(task: str, path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{task}: cannot read {path} ({err}); re-create the dataset with `save_to_disk`.") from None
    if not isinstance(doc, dict):
        raise DataError(f"{task}: {path} must hold a JSON object.")
    return doc


def _saved(task: str, folder: Path, split: str) -> HfSplit:
    state = _read_json(task, folder / "state.json")
    names = [f.get("filename") for f in state.get("_data_files", []) if isinstance(f, dict)]
    if not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{task}: {folder / 'state.json'} lists no shards (`_data_files`); re-create the dataset with `save_to_disk`.")
    files = tuple(folder / n for n in names)
    gone = [str(f) for f in files if not f.is_file()]
    if gone:
        raise DataError(
            f"{task}: {len(gone)} shard(s) that {folder / 'state.json'} lists are missing, e.g. {gone[0]}; copy them back or re-save."
        )
    info = _read_json(task, folder / "dataset_info.json") if (folder / "dataset_info.json").is_file() else {}
    return HfSplit(split, files, info.get("features") or {})


def _parquet_features(file: Path) -> dict:
    """The features `datasets` stores in a parquet file's schema metadata ('huggingface'), if any."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(file).metadata or {}
    try:
        return json.loads(meta.get(b"huggingface", b"{}")).get("info", {}).get("features") or {}
    except ValueError:
        return {}


def find_split(task: str, data: Path, split: str) -> HfSplit | None:
    """The shards of `split` under `data` in any of the module's layouts, or None when there are none."""
    data = Path(data)
    if (data / split / "state.json").is_file():
        return _saved(task, data / split, split)
    if (data / "state.json").is_file() and _read_json(task, data / "state.json").get("_split") == split:
        return _saved(task, data, split)
    for depth in ("", "*/", "*/*/"):
        files = sorted(data.glob(f"{depth}{split}-*.parquet")) or sorted(data.glob(f"{depth}{split}/*.parquet"))
        if files:
            return HfSplit(split, tuple(files), _parquet_features(files[0]))
    return None


def has_dataset(data: Path) -> bool:
    """Whether `data` looks like a saved Hugging Face dataset (saved dict, saved split or parquet shards)."""
    data = Path(data)
    marks = ("dataset_dict.json", "state.json", "*/state.json", "*.parquet", "*/*.parquet", "*/*/*.parquet")
    return any(next(iter(data.glob(m)), None) is not None for m in marks)


def read_split(task: str, data: Path, split: str, columns: Sequence[str]) -> tuple[HfSplit, pl.DataFrame]:
    """The split's `columns` for every row (plus `_file`, `_row`: where the row is), shard by shard.

    Image columns are not read (only their location is kept); a split that is not there is
    the `missing_data` error, a shard without one of `columns` a `DataError` naming both."""
    found = find_split(task, data, split)
    if found is None:
        raise missing_data(task, Path(data), Path(data) / split)
    parts = []
    for file in found.files:
        table = _columns(task, file, columns)
        parts.append(
            pl.from_arrow(table).with_columns(pl.lit(str(file)).alias("_file"), pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"))
        )
    rows = pl.concat(parts, how="vertical_relaxed")
    if rows.height == 0:
        raise DataError(f"{task}: split {split} under {data} has no rows ({len(found.files)} empty shard(s)).")
    return found, rows


def _columns(task: str, file: Path, columns: Sequence[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(file).names if file.suffix == ".parquet" else read_arrow(file).schema.names
        lacking = [c for c in columns if c not in names]
        if lacking:
            raise DataError(f"{task}: {file} lacks column(s) {', '.join(lacking)} (it has {', '.join(names)}).")
        return pq.read_table(file, columns=list(columns)) if file.suffix == ".parquet" else read_arrow(file, columns)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{task}: cannot read {file} ({err}); it is damaged or not a parquet / Arrow file. Re-download it.") from None


def image_column(task: str, split: HfSplit, candidates: Sequence[str] = ("image",)) -> str:
    """The first of `candidates` that is an image column (a struct with `bytes`) in the split's first shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = split.files[0]
    schema = pq.read_schema(file) if file.suffix == ".parquet" else read_arrow(file).schema
    for name in candidates:
        if name in schema.names:
            typ = schema.field(name).type
            if pa.types.is_struct(typ) and typ.get_field_index("bytes") >= 0:
                return name
    raise DataError(
        f"{task}: {file} has no image column (a struct with bytes and path) among {', '.join(candidates)}; "
        f"its columns are {', '.join(schema.names)}."
    )


def table_images(task: str, rows: pl.DataFrame, column: str, ids: Sequence[str]) -> ImageSet:
    """An `ImageSet` of the images in `column` at the rows' (`_file`, `_row`)."""
    files = {f: Path(f) for f in rows["_file"].unique()}  # one Path per shard
    refs = [TableImage(files[f], r, column) for f, r in zip(rows["_file"], rows["_row"])]
    return ImageSet(task, list(ids), refs)


def hub_steps(task: str, root: Path, repo: str, layout: str, *, gated: bool) -> DataError:
    """The `DataError` a download raises for a dataset on the Hugging Face Hub: the exact steps and the layout (`{dir}` = root)."""
    from biobench.download import manual_steps

    steps = [
        f"Create a Hugging Face account, open https://huggingface.co/datasets/{repo} and accept its terms of access.",
        "pip install -U huggingface_hub && huggingface-cli login   (paste a token from https://huggingface.co/settings/tokens)",
    ] if gated else ["pip install -U huggingface_hub   (nothing to accept: the dataset is public)"]  # fmt: skip
    steps += [
        f"huggingface-cli download {repo} --repo-type dataset --local-dir {{dir}}   "
        f"(or, in Python with `datasets`: load_dataset('{repo}').save_to_disk('{{dir}}'))",
        f'Point the config at it: [data] {task} = "{{dir}}"',
    ]
    why = f"biobench does not download {repo} itself" + (" (it needs a Hugging Face login and accepted terms)" if gated else "")
    return manual_steps(task, root, why, steps, layout)
