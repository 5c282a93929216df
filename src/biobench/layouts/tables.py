"""CSV tables: columns located by name, every problem named by file, line and column.

`read_csv` reads every column as a string and adds `_line`, each row's line in the file
(the header is line 1), which the checks below quote in their errors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from biobench.errors import DataError
from biobench.examples import Examples, one_per_image
from biobench.images import ImageSet
from biobench.layouts import missing_data, require_files

logger = logging.getLogger(__name__)


def read_csv(
    task: str, data: Path, path: Path, required: Sequence[str], *, separator: str = ",", names: Sequence[str] | None = None
) -> pl.DataFrame:
    """The CSV at `path`, all columns as strings plus `_line`, with `required` columns checked by name.

    `names`: the file has no header line and these are its columns (a row with another
    number of fields is a `DataError` naming its line); its first row is then line 1.
    """
    if not Path(path).is_file():
        raise missing_data(task, data, Path(path))
    try:
        if names is None:
            df = pl.read_csv(path, separator=separator, infer_schema=False)
        else:
            df = pl.read_csv(path, separator=separator, infer_schema=False, has_header=False, new_columns=list(names))
    except Exception as err:
        raise DataError(f"{task}: cannot parse {path}: {err}") from None
    if names is not None and len(df.columns) != len(names):
        raise DataError(f"{task}: {path} has {len(df.columns)} fields per line; expected {len(names)} ({', '.join(names)}).")
    require_columns(task, df, path, required)
    return df.with_row_index("_line", offset=2 if names is None else 1)


def require_columns(task: str, df: pl.DataFrame, path: Path, required: Sequence[str]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{task}: {path} lacks column(s) {', '.join(map(repr, missing))}; it has {', '.join(map(repr, df.columns))}.")


def drop_nulls(task: str, df: pl.DataFrame, path: Path, columns: Sequence[str]) -> tuple[pl.DataFrame, int]:
    """Rows with a null (or empty) value in `columns` removed, and how many were removed (logged)."""
    keep = pl.all_horizontal([pl.col(c).is_not_null() & (pl.col(c) != "") for c in columns])
    kept = df.filter(keep)
    dropped = df.height - kept.height
    if dropped:
        logger.info("%s: dropped %d of %d rows of %s with empty values.", task, dropped, df.height, path)
    return kept, dropped


def _fail(task: str, path: Path, bad: pl.DataFrame, column: str, want: str) -> DataError:
    row = bad.row(0, named=True)
    where = f" line {row['_line']}" if "_line" in row else ""
    return DataError(f"{task}: {path}{where}: {column} must be {want}, got {row[column]!r}; fix or remove the {bad.height} such row(s).")


def require_values(task: str, df: pl.DataFrame, path: Path, column: str, allowed: Sequence) -> None:
    """Every value of `column` is one of `allowed`; else a `DataError` naming the file, the line and the value."""
    bad = df.filter(~pl.col(column).is_in(list(allowed)))
    if bad.height:
        want = " or ".join(map(str, allowed)) if len(allowed) <= 2 else f"one of {', '.join(map(str, allowed))}"
        raise _fail(task, path, bad, column, want)


def require_filled(task: str, df: pl.DataFrame, path: Path, columns: Sequence[str]) -> None:
    """No value of `columns` is empty; else a `DataError` naming the file, the line and the column."""
    for c in columns:
        bad = df.filter(pl.col(c).is_null() | (pl.col(c).str.strip_chars() == ""))
        if bad.height:
            raise _fail(task, path, bad, c, "filled in")


def integers(task: str, df: pl.DataFrame, path: Path, columns: Sequence[str]) -> pl.DataFrame:
    """`df` with `columns` as integers; an empty or non-integer value is a `DataError` naming the file, line and column."""
    typed = df.with_columns(pl.col(*columns).cast(pl.Int64, strict=False))
    for c in columns:
        bad = df.filter(typed[c].is_null())
        if bad.height:
            raise _fail(task, path, bad, c, "an integer")
    return typed


def encode(task: str, df: pl.DataFrame, path: Path, column: str, codes: Mapping[str, int]) -> pl.Series:
    """`column`'s values (case and surrounding spaces ignored) mapped through `codes`; any other value is a `DataError`."""
    values = df[column].str.strip_chars().str.to_lowercase()
    bad = df.filter(~values.is_in(list(codes)).fill_null(False))
    if bad.height:
        raise _fail(task, path, bad, column, " or ".join(map(repr, codes)))
    return values.replace_strict(dict(codes), return_dtype=pl.Int64).alias(column)


def require_unique(task: str, df: pl.DataFrame, path: Path, column: str, what: str) -> None:
    """No value of `column` repeats; else a `DataError` naming the file, the value and how often it appears."""
    dupes = df.filter(pl.col(column).is_duplicated())
    if dupes.height:
        first = dupes[column][0]
        n = dupes.filter(pl.col(column) == first).height
        raise DataError(f"{task}: {path}: {what} {first!r} appears {n} times; each must appear once.")


def read_examples(
    task: str,
    data: Path,
    csv: Path,
    images_dir: Path,
    *,
    image: str = "file",
    label: str = "label",
    split: str = "split",
    splits: Mapping[str, str] = {"train": "train", "test": "test"},
    separator: str = ",",
) -> Examples:
    """Examples from a CSV with one row per image: its file (under `images_dir`), class name and split.

    `splits` maps the CSV's split values to 'train' / 'test'. Classes are indexed by sorted
    name over every row, so a class seen in one split only keeps one index. Empty values,
    unknown splits and listed files missing on disk are `DataError`s naming the line.
    """
    df = read_csv(task, data, csv, (image, label, split), separator=separator)
    require_filled(task, df, csv, (image, label, split))
    require_values(task, df, csv, split, tuple(splits))
    names = sorted(set(df[label].to_list()))
    index = {n: i for i, n in enumerate(names)}
    paths = [Path(images_dir) / f for f in df[image]]
    require_files(task, paths, [f"line {n} ({f})" for n, f in zip(df["_line"], df[image])], csv)
    labels = np.array([index[n] for n in df[label]], dtype=np.int64)
    images = ImageSet(task, df[image].to_list(), paths)
    return one_per_image(images, labels, [splits[s] for s in df[split]], classnames={"": tuple(names)})
