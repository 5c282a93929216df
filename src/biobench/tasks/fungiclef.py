"""FungiCLEF 2023: name the fungus species of an observation, say "unknown" for species never trained on, and don't call a poisonous one edible.

Picek, Šulc, Chamidullin, Matas et al. "Overview of FungiCLEF 2023: Fungi Recognition Beyond
1/0 Cost." CLEF 2023 Working Notes. Danish Fungi 2020 (train) and 2021 (validation) images,
https://www.imageclef.org/FungiCLEF2023; evaluation: BohemianVRA/FGVC-Competitions, FungiCLEF2023/evaluate.py.

Data layout (the challenge's files, as `biobench download fungiclef` lays them out):

```
DIR/FungiCLEF2023_train_metadata_PRODUCTION.csv   one row per image: observationID, image_path, class_id, ...
DIR/FungiCLEF2023_val_metadata_PRODUCTION.csv     the same; class_id -1 = a species outside the training classes
DIR/DF20_300/<image_path>, DIR/DF21_300/<image_path>   training / validation images (max side 300 px)
DIR/poison_status_list.csv                        class_id, poisonous (0/1)
```

An `image_path` missing on disk is looked up lower-cased (some archives lower-case names).
A missing file or column, a listed image found neither way, an empty or non-integer
`class_id`, a training row of class -1, and an observation whose images disagree on
`class_id` are `DataError`s naming the file and line or observation; so is a
`poison_status_list.csv` that marks a class differently from `POISONOUS` below.

Protocol (the original biobench's): every training image is an example (`n_train >= 0`:
a seeded class-balanced sample of images); every validation *observation* is one test
example, the mean of its images' features. SimpleShot (centre, L2-normalise, nearest class
mean) names the species; a Mahalanobis detector (shared shrunk covariance, threshold at the
95th percentile of the training images' own distances) answers unknown (-1) instead.

Metric: the challenge's track-3 user-focused loss (classification error + poisonous/edible
confusion cost: 100 for a poisonous species called edible or unknown, 1 for an edible or
unknown one called poisonous), reported as `1 - loss / worst possible loss` (1 = perfect),
with a bootstrap 95% interval over observations. Sub-scores ('metrics'): macro-F1 and the
four tracks' raw values (track 4: error with cost 10 for an unknown called known, 0.1 for
a known called unknown).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl

from biobench import costs, fixtures, stats
from biobench.download import Resource
from biobench.errors import DataError
from biobench.examples import Examples
from biobench.images import ImageSet
from biobench.layouts import missing_data, require_files
from biobench.layouts.tables import integers, read_csv
from biobench.metrics import Metric
from biobench.probes import OpenSet, SimpleShot
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

NAME = "fungiclef"
VERSION = 1
CITATION = """@inproceedings{picek2023overview,
  title={Overview of {FungiCLEF} 2023: Fungi Recognition Beyond 1/0 Cost},
  author={Picek, Lukas and {\\v{S}}ulc, Milan and Chamidullin, Rail and Matas, Ji{\\v{r}}{\\'i}},
  booktitle={CLEF 2023: Conference and Labs of the Evaluation Forum (Working Notes)},
  year={2023}
}
@inproceedings{picek2022danish,
  title={Danish Fungi 2020 - Not Just Another Image Recognition Dataset},
  author={Picek, Lukas and {\\v{S}}ulc, Milan and Matas, Ji{\\v{r}}{\\'i} and Jeppesen, Thomas S and Heilmann-Clausen, Jacob and L{\\ae}s{\\o}e, Thomas and Fr{\\o}slev, Tobias},
  booktitle={Proceedings of the IEEE/CVF Winter Conference on Applications of Computer Vision},
  pages={1525--1535},
  year={2022}
}"""

SPLITS = {
    "train": ("FungiCLEF2023_train_metadata_PRODUCTION.csv", "DF20_300"),
    "test": ("FungiCLEF2023_val_metadata_PRODUCTION.csv", "DF21_300"),
}
"""Split -> (metadata CSV, image folder) under DIR."""
POISON_CSV = "poison_status_list.csv"
POISONOUS = frozenset({20, 25, 35, 40, 42, 43, 44, 45, 50, 52, 211, 229, 252, 263, 281, 286, 307, 309, 320, 358, 413, 445, 506, 581,
                       586, 594, 687, 688, 689, 724, 726, 728, 796, 842, 843, 852, 968, 989, 992, 1050, 1079, 1179, 1246, 1281,
                       1311, 1312, 1332, 1398, 1513})  # fmt: skip
"""class_ids with poisonous = 1 in the challenge's poison_status_list.csv (part of the metric; `read` checks the file agrees)."""


def user_costs(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-observation track-3 loss (0/1 error + poisonous confusion cost) and its worst possible value."""
    loss = costs.open_set_costs(y_true, y_pred) + costs.critical_costs(y_true, y_pred, POISONOUS)
    return loss, 1.0 + np.where(np.isin(y_true, sorted(POISONOUS)), 100.0, 1.0)


def user_score(y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray | None = None) -> float | np.ndarray:
    """1 - (track-3 loss) / (its worst case), per bootstrap replicate of `idx`."""
    return costs.normalized_score(*user_costs(y_true, y_pred), idx)


TRACKS = (
    ("f1_macro", lambda t, p: stats.macro_f1(t, p, labels=np.union1d(t, p))),
    ("track1_classification_error", lambda t, p: costs.open_set_costs(t, p).mean()),
    ("track2_poisonous_confusion_cost", lambda t, p: costs.critical_costs(t, p, POISONOUS).mean()),
    ("track3_user_focused_loss", lambda t, p: user_costs(t, p)[0].mean()),
    ("track4_error_unknown_cost", lambda t, p: costs.open_set_costs(t, p, unknown_as_known=10.0, known_as_unknown=0.1).mean()),
)
"""The challenge's reported numbers (its macro-F1 is over the labels in truth or prediction), as sub-scores."""
USER_SCORE = Metric("user_score", user_score, extra=TRACKS)


@dataclasses.dataclass(frozen=True)
class Options:
    """FungiCLEF options, from the config file's `[fungiclef]` table."""

    data: Path
    """Directory holding the two metadata CSVs, DF20_300/, DF21_300/ and poison_status_list.csv."""


def read_split(data: Path, split: str) -> pl.DataFrame:
    """One split's rows with integer `class_id` and the resolved image `path`."""
    csv, folder = SPLITS[split]
    df = integers(NAME, read_csv(NAME, data, data / csv, ("observationID", "image_path", "class_id")), data / csv, ("class_id",))
    if not (data / folder).is_dir():
        raise missing_data(NAME, data, data / folder)
    bad = df.filter(pl.col("class_id") < (0 if split == "train" else -1))
    if bad.height:
        raise DataError(f"{NAME}: {csv} line {bad['_line'][0]}: class_id {bad['class_id'][0]} is not a training class; "
                        "training rows need a class_id >= 0 (only validation rows may be -1, unknown).")  # fmt: skip
    paths = [
        p if p.is_file() or not (low := p.with_name(p.name.lower())).is_file() else low
        for p in (data / folder / f for f in df["image_path"])
    ]
    require_files(NAME, paths, [f"line {n} ({f})" for n, f in zip(df["_line"], df["image_path"])], data / csv)
    mixed = df.group_by("observationID").agg(pl.col("class_id").n_unique().alias("n"), pl.col("_line")).filter(pl.col("n") > 1)
    if mixed.height:
        obs, lines = mixed["observationID"][0], mixed["_line"][0].to_list()[:5]
        raise DataError(f"{NAME}: {csv}: observation {obs} has images of different class_id (lines {lines}); fix its rows.")
    return df.with_columns(path=pl.Series([str(p) for p in paths]), image=pl.lit(f"{folder}/") + pl.col("image_path"))


def check_poison_list(data: Path) -> None:
    """The downloaded poison list must mark exactly the `POISONOUS` classes it lists as poisonous."""
    path = data / POISON_CSV
    df = integers(NAME, read_csv(NAME, data, path, ("class_id", "poisonous")), path, ("class_id", "poisonous"))
    bad = df.filter((pl.col("poisonous") == 1) != pl.col("class_id").is_in(sorted(POISONOUS)))
    if bad.height:
        row = bad.row(0, named=True)
        raise DataError(f"{NAME}: {path} line {row['_line']} gives class_id {row['class_id']} poisonous = {row['poisonous']}, "
                        f"but biobench's FungiCLEF 2023 list (fungiclef.POISONOUS) says otherwise for {bad.height} class(es); "
                        "re-download the file, or report the mismatch.")  # fmt: skip


def read(options: Options) -> Examples:
    """Training images one example each; validation observations one example each, pooling their images."""
    data = Path(options.data)
    check_poison_list(data)
    train, test = read_split(data, "train"), read_split(data, "test")
    ids = train["image"].to_list() + ("observation/" + test["observationID"]).to_list()
    table = pl.DataFrame({"id": ids, "image": np.arange(len(ids)), "label": np.r_[train["class_id"], test["class_id"]],
                          "split": ["train"] * train.height + ["test"] * test.height})  # fmt: skip
    images = ImageSet(NAME, train["image"].to_list() + test["image"].to_list(), train["path"].to_list() + test["path"].to_list())
    return Examples(images, table, pool="mean")


############
# Fixture  #
############

FIXTURE_CLASSES = (0, 1, 2, 3, 20, 25, 35)
"""Real class ids: four edible, three poisonous."""


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
    """Write both CSVs, JPEGs and the poison list: 4 training observations of 2 images per class and 4
    validation observations of 1-2 images per class, plus 5 validation observations of an unknown species (-1).

    With `shuffle_labels`, class ids are permuted among each split's observations after drawing."""
    rng, root = np.random.default_rng(seed), Path(root)
    for split, (csv, folder) in SPLITS.items():
        classes = [*FIXTURE_CLASSES] + ([-1] if split == "test" else [])
        obs = [
            (c, 2 if split == "train" else int(rng.integers(1, 3)))
            for c in classes
            for _ in range(5 if c == -1 else 4 if split == "test" else 8)
        ]
        obs_label = np.array([c for c, _ in obs])
        if shuffle_labels:
            obs_label = obs_label[rng.permutation(len(obs))]
        rows = []
        for k, ((c, n), label) in enumerate(zip(obs, obs_label)):
            observation = str(int(rng.integers(2_000_000_000, 3_000_000_000)))
            for j in range(n):
                name = f"{observation}-{k * 10 + j}.JPG"
                path = root / folder / (name.lower() if j else name)  # the lower-cased name on disk: `read` finds it
                fixtures.save_jpeg(fixtures.draw(rng, 2023, FIXTURE_CLASSES.index(c) if c >= 0 else 9, strength=0.8), path)
                rows.append({"observationID": observation, "image_path": name, "class_id": int(label), "species": f"species {label}"})
        pl.DataFrame(rows).write_csv(root / csv)
    pl.DataFrame({"class_id": FIXTURE_CLASSES, "poisonous": [int(c in POISONOUS) for c in FIXTURE_CLASSES]}).write_csv(root / POISON_CSV)


############
# Download #
############

_DF = "http://ptak.felk.cvut.cz/plants/DanishFungiDataset"
RESOURCES = (
    Resource(f"{_DF}/DF20-300px.tar.gz", "DF20-300px.tar.gz", None, ("DF20_300/*",)),
    Resource(f"{_DF}/DF21_300px.tar.gz", "DF21_300px.tar.gz", None, ("DF21_300/*",)),
    *(Resource(f"{_DF}/{f}", f, None, (f,), extract=False) for f in (SPLITS["train"][0], SPLITS["test"][0], POISON_CSV)),
)
"""Training (6.5 GB) and validation (2.5 GB) images, the two metadata CSVs and the poison list; no md5 is published."""


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES,
                              probe=OpenSet(base=SimpleShot(), quantile=0.95), metric=USER_SCORE))  # fmt: skip
