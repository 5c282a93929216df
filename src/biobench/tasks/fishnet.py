"""FishNet: predict nine functional traits (feeding path, climate zones, water types) of a fish from its photo.

Khan, Li, Temple and Elhoseiny. "FishNet: A Large-scale Dataset and Benchmark for Fish
Recognition, Detection, and Functional Trait Prediction." ICCV 2023.
https://github.com/faixan-khan/FishNet (94,532 images of 17,357 aquatic species).

Data layout (the dataset's own; the CSVs are pandas dumps, so the first header is empty):

```
DIR/train.csv, DIR/test.csv   , Unnamed: 0, species, image, ..., Folder, Troph, FeedingPath,
                              Tropical, Temperate, Subtropical, Boreal, Polar, freshwater,
                              saltwater, brackish, NewOrder, Frequency; one row per image
DIR/Image_Library/<Folder>/<image>   (only the file name of `image` is used)
```

Protocol (biobench's FishNet): every image listed in a split is embedded once; rows with an
empty trait are dropped (and counted: in the log, by `read_split`, and as `Examples.skipped`
"empty trait", stored in the report's sub-scores under `skipped`). The label is 9-hot:
FeedingPath (pelagic = 1, benthic = 0), then the eight 0/1 habitat columns. An MLP
d -> 512 -> ReLU -> dropout 0.5 -> 9 is trained with Adam (lr 5e-4) on BCE for 100 epochs on
the raw features; a trait is predicted present when its probability exceeds 0.5. With
`n_train >= 0`, a seeded uniform sample of the training rows. The score is the mean over the
nine traits of each trait's binary F1, with a bootstrap 95% interval over test images;
sub-scores give each trait's F1 and positive rate.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import polars as pl

from biobench import fixtures
from biobench.download import Resource
from biobench.errors import DataError
from biobench.examples import Examples, one_per_image
from biobench.images import ImageSet
from biobench.layouts import missing_data, require_files
from biobench.layouts.tables import drop_nulls, encode, read_csv
from biobench.metrics import MULTILABEL_MEAN_F1
from biobench.probes import Mlp
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

NAME = "fishnet"
VERSION = 1
CITATION = """@inproceedings{khan2023fishnet,
  title={FishNet: A Large-scale Dataset and Benchmark for Fish Recognition, Detection, and Functional Trait Prediction},
  author={Khan, Faizan Farooq and Li, Xiang and Temple, Andrew J. and Elhoseiny, Mohamed},
  booktitle={Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  pages={20496--20506},
  year={2023}
}"""

SPLITS = {"train": "train.csv", "test": "test.csv"}
IMAGES_DIR = "Image_Library"
TRAITS = ("FeedingPath", "Tropical", "Temperate", "Subtropical", "Boreal", "Polar", "freshwater", "saltwater", "brackish")
"""The label columns, in label order; FeedingPath holds 'pelagic' (1) or 'benthic' (0), the others 0/1."""
FEEDING = {"pelagic": 1, "benthic": 0}
BINARY = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}  # pandas writes 1.0 for integer columns that once held NaN


@dataclasses.dataclass(frozen=True)
class Options:
    """FishNet options, from the config file's `[fishnet]` table."""

    data: Path
    """Directory holding train.csv, test.csv and Image_Library/."""


def read_split(cfg: Options, split: str) -> tuple[pl.DataFrame, int]:
    """One split's rows with a `path` column and the 0/1 trait columns, and how many rows were dropped for empty traits."""
    data = Path(cfg.data)
    path = data / SPLITS[split]
    df, dropped = drop_nulls(NAME, read_csv(NAME, data, path, ("image", "Folder", *TRAITS)), path, TRAITS)
    codes = [encode(NAME, df, path, trait, FEEDING if trait == "FeedingPath" else BINARY) for trait in TRAITS]
    files = df["image"].str.split("/").list.last()  # some rows hold a path; the library is flat per folder
    df = df.with_columns(*codes, path=pl.concat_str(pl.col("Folder"), pl.lit("/"), files))
    if not (data / IMAGES_DIR).is_dir():
        raise missing_data(NAME, data, data / IMAGES_DIR)
    items = [f"line {n} ({p})" for n, p in zip(df["_line"], df["path"])]
    require_files(NAME, [data / IMAGES_DIR / p for p in df["path"]], items, path)
    return df, dropped


def read(cfg: Options) -> Examples:
    """One example per listed image; its label the 9-hot trait vector."""
    read = {split: read_split(cfg, split) for split in SPLITS}
    parts = {split: df for split, (df, _) in read.items()}
    dropped = sum(n for _, n in read.values())
    df = pl.concat([d.select("path", *TRAITS, "_line").with_columns(split=pl.lit(s)) for s, d in parts.items()])
    dupes = df.filter(pl.col("path").is_duplicated())
    if dupes.height:
        where = ", ".join(f"{SPLITS[s]} line {n}" for s, n in zip(dupes["split"][:3], dupes["_line"][:3]))
        raise DataError(f"{NAME}: image {dupes['path'][0]} is listed more than once ({where}); keep one row per image.")
    paths = df["path"].to_list()
    images = ImageSet(NAME, paths, [Path(cfg.data) / IMAGES_DIR / p for p in paths])
    return one_per_image(images, df.select(TRAITS).to_numpy(), df["split"].to_list(), classnames={"": TRAITS},
                         skipped={"empty trait": dropped} if dropped else {})  # fmt: skip


# Fixture

COLUMNS = ("", "Unnamed: 0", "species", "image", "SpecCode", "Genus", "Subfamily", "Family", "Order", "Class", "SuperClass",
           "source", "Folder", "Troph", *TRAITS, "NewOrder", "Frequency")  # fmt: skip
FAMILIES = {
    # Folder: (genus, FeedingPath, Tropical, Temperate, Subtropical, Boreal, Polar, freshwater, saltwater, brackish)
    "Acanthuridae": ("Acanthurus", "benthic", 1, 0, 1, 0, 0, 0, 1, 0),
    "Sciaenidae": ("Sciaenops", "pelagic", 1, 1, 1, 0, 0, 0, 1, 1),
    "Sparidae": ("Diplodus", "benthic", 0, 1, 1, 0, 0, 0, 1, 1),
    "Salmonidae": ("Salmo", "pelagic", 0, 1, 0, 1, 1, 1, 1, 1),
    "Cyprinidae": ("Cyprinus", "benthic", 0, 1, 1, 0, 0, 1, 0, 0),
    "Gadidae": ("Gadus", "pelagic", 0, 0, 0, 1, 1, 0, 1, 0),
    "Scombridae": ("Thunnus", "pelagic", 1, 0, 1, 0, 0, 0, 1, 0),
    "Cottidae": ("Cottus", "benthic", 0, 0, 0, 1, 1, 1, 0, 0),
}
"""Traits belong to a family, as in the real data (they come from FishBase per species), and each family looks alike."""


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False, n_train: int = 20, n_test: int = 10) -> None:
    """Write FishNet-format CSVs and images: `n_train` / `n_test` images per family, plus two rows per split with
    an empty trait (dropped by `read`). With `shuffle_labels`, trait vectors are permuted among a split's images
    after the images are drawn."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    row_id = 0
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for k, (folder, (genus, *traits)) in enumerate(FAMILIES.items()):
            for _ in range(n):
                file = f"{fixtures.example_id(rng)}.jpg"
                fixtures.save_jpeg(fixtures.draw(rng, 7, k, strength=0.9), root / IMAGES_DIR / folder / file)
                rows.append([str(row_id), str(row_id), "", file, "", genus, "", folder, "Perciformes", "Actinopterygii", "",
                             "inat", folder, "3.2", *map(str, traits), "Perciformes", "0.28"])  # fmt: skip
                row_id += 1
        if shuffle_labels:
            start = COLUMNS.index("FeedingPath")
            labels = [r[start : start + len(TRAITS)] for r in rows]
            for r, j in zip(rows, rng.permutation(len(rows))):
                r[start : start + len(TRAITS)] = labels[j]
        for r, trait in zip(rows[:2], ("Polar", "FeedingPath")):  # the real CSVs have rows with missing traits
            r[COLUMNS.index(trait)] = ""
        with open(root / SPLITS[split], "w", newline="") as f:  # csv, not polars: the first header must stay empty
            csv.writer(f).writerows([COLUMNS, *rows])


# Download

LABELS_URL = "https://raw.githubusercontent.com/faixan-khan/FishNet/refs/heads/main/anns/"
# The Google Drive file biobench's download script fetches (with gdown); this form skips Drive's virus-scan page.
IMAGES_URL = "https://drive.usercontent.google.com/download?id=1mqLoap9QIVGYaPJ7T_KSBfLxJOg2yFY3&export=download&confirm=t"

RESOURCES = (
    Resource(LABELS_URL + "train.csv", "train.csv", None, ("train.csv",), extract=False),
    Resource(LABELS_URL + "test.csv", "test.csv", None, ("test.csv",), extract=False),
    Resource(IMAGES_URL, "fishnet.zip", None, (f"{IMAGES_DIR}/*/*",)),
)
"""Labels from the FishNet repository (no published md5) and the 5.4 GB image zip, which unpacks to Image_Library/."""


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES,
                              probe=Mlp(hidden=512, epochs=100, lr=5e-4, threshold=0.5), metric=MULTILABEL_MEAN_F1, kind="traits"))  # fmt: skip
