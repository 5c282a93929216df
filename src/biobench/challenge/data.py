"""The HDR challenge's training metadata (`butterfly_anomaly_train.csv`) and its images.

The training CSV of https://github.com/Imageomics/HDR-anomaly-challenge (`files/`) has one
row per image: `CAMID, file_url, hybrid_stat (hybrid | non-hybrid), split, zenodo_link,
md5, subspecies, parent_subspecies_1, parent_subspecies_2, filename`; images are stored
flat under their `filename`. Only `filename` and `hybrid_stat` are needed here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from biobench.errors import DataError
from biobench.images import ImageSet
from biobench.layouts import tables

TRAIN_COLUMNS = ("filename", "hybrid_stat")
_HYBRID = {"hybrid": 1, "1": 1, "non-hybrid": 0, "0": 0}


def read_training_csv(path: Path) -> pl.DataFrame:
    """The training CSV with an added `label` column (1 = hybrid), validated."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Training CSV not found: {path}.")
    try:
        df = pl.read_csv(path, infer_schema=False)
    except Exception as err:
        raise DataError(f"Cannot parse {path}: {err}") from None
    missing = [c for c in TRAIN_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; the training CSV needs {', '.join(TRAIN_COLUMNS)}.")
    stat = df["hybrid_stat"].fill_null("").str.strip_chars().str.to_lowercase()
    bad = df.filter(~stat.is_in(list(_HYBRID)))
    if bad.height:
        row = bad.row(0, named=True)
        raise DataError(f"{path}: hybrid_stat of {row['filename']!r} is {row['hybrid_stat']!r}; expected hybrid or non-hybrid.")
    tables.require_unique("hybrids", df, path, "filename", what="filename")
    return df.with_columns(label=stat.replace_strict(_HYBRID, return_dtype=pl.Int8))


def training_images(train_csv: Path, images_dir: Path, *, name: str = "hdr-train") -> ImageSet:
    """The training images as an ImageSet (ids = filenames; table = the CSV plus `label`)."""
    df = read_training_csv(train_csv)
    files = df["filename"].to_list()
    return ImageSet(name, files, [Path(images_dir) / f for f in files], table=df)


def labels(images: ImageSet) -> np.ndarray:
    assert images.table is not None
    return images.table["label"].to_numpy().astype(int)
