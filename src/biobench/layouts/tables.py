"""CSV tables: columns located by name, every problem named by file and column (or row)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from biobench.errors import DataError
from biobench.layouts import missing_data

logger = logging.getLogger(__name__)


def read_csv(task: str, data: Path, path: Path, required: Sequence[str], *, separator: str = ",") -> pl.DataFrame:
    """The CSV at `path`, all columns as strings, with `required` columns checked by name."""
    if not Path(path).is_file():
        raise missing_data(task, data, Path(path))
    try:
        df = pl.read_csv(path, separator=separator, infer_schema=False)
    except Exception as err:
        raise DataError(f"{task}: cannot parse {path}: {err}") from None
    require_columns(task, df, path, required)
    return df


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


def require_values(task: str, df: pl.DataFrame, path: Path, column: str, allowed: Sequence, item: str) -> None:
    """Every value of `column` is one of `allowed`; else a `DataError` naming the file, the row (by its `item` column) and the value."""
    bad = df.filter(~pl.col(column).is_in(list(allowed)))
    if bad.height:
        row = bad.row(0, named=True)
        want = " or ".join(map(str, allowed)) if len(allowed) <= 2 else "one of " + ", ".join(map(str, allowed))
        raise DataError(f"{task}: {path}: {column} must be {want}; {item} {row[item]} has {row[column]!r}.")


def require_unique(task: str, df: pl.DataFrame, path: Path, column: str, what: str) -> None:
    """No value of `column` repeats; else a `DataError` naming the file, the value and how often it appears."""
    dupes = df.filter(pl.col(column).is_duplicated())
    if dupes.height:
        first = dupes[column][0]
        n = dupes.filter(pl.col(column) == first).height
        raise DataError(f"{task}: {path}: {what} {first!r} appears {n} times; each must appear once.")
