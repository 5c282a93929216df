"""Ages: does a model recognise a bird species across its stages of life?

Built from NeWT's 12 `ml_age_*` tasks (Van Horn et al., CVPR 2021; cite NeWT when you
use it). The label is the species (the dense rank of the task name: 12 classes); the
NeWT label (adult vs not adult, in `text_label`) picks the images of three settings:

1. adult -> adult: train and test on adults (the baseline);
2. not_adult -> not_adult: train and test on juveniles (a drop mirrors the pre-training data);
3. adult -> not_adult: train on adults, test on juveniles, the headline score: are
   representations robust to stage of life?

Data: the NeWT directory itself (`newt2021_labels.csv`, `newt2021_images/`).

Protocol (features): L2-normalise, then NeWT's SVM search (`biobench.probes.svm`),
multi-class, as the original Ages ran it: no per-setting centring (version 1 centred on
the training mean as NeWT does; that moved the headline by about 4 points). When some
species has fewer than 5 training images (the search's folds), a plain linear SVC, as
NeWT does below 10 images. `n_train` is the number of training images per setting,
sampled class-balanced over species and seeded per (seed, setting); -1 = all. Protocol
(MLLM): the same settings as 12-way questions, with `n_train` in-context examples.

Metric: accuracy on adult -> not_adult, with a bootstrap 95% interval; sub-scores give
accuracy per setting. Predictions of all three settings are stored (ids
`SETTING:IMAGE_ID`); the seed kept only the last setting's predictions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from biobench import fixtures
from biobench.errors import DataError
from biobench.examples import Examples
from biobench.images import ImageSet
from biobench.probes import Svm
from biobench.tasks import newt, register_task
from biobench.tasks.spec import TaskSpec

NAME = "ages"
VERSION = 2
CITATION = newt.CITATION

SETTINGS = (("adult", "adult"), ("not_adult", "not_adult"), ("adult", "not_adult"))
HEADLINE = "adult/not_adult"

SPECIES = {
    "ml_age_bald_eagle": "bald eagle",
    "ml_age_black_bellied_plover": "black-bellied plover",
    "ml_age_coopers_hawk": "Cooper's hawk",
    "ml_age_dunlin": "dunlin",
    "ml_age_least_sandpiper": "least sandpiper",
    "ml_age_rough_legged_hawk": "rough-legged hawk",
    "ml_age_sanderling": "sanderling",
    "ml_age_semipalmated_plover": "semipalmated plover",
    "ml_age_sharp_shinned_hawk": "sharp-shinned hawk",
    "ml_age_swainsons_hawk": "Swainson's hawk",
    "ml_age_western_sandpiper": "western sandpiper",
    "ml_age_whimbrel": "whimbrel",
}
"""NeWT's age task -> the species' common name (the class name MLLM prompts use)."""


@dataclasses.dataclass(frozen=True)
class Options:
    """Ages options, from the config file's `[ages]` table."""

    data: Path
    """The NeWT directory (newt2021_labels.csv and newt2021_images/)."""


def setting_name(train: str, test: str) -> str:
    return f"{train}/{test}"


def read_labels(cfg: Options) -> pl.DataFrame:
    """NeWT's age rows with a `species` column (0..11, dense rank of the task name), in file order."""
    df = newt.read_labels(newt.Options(data=cfg.data), task=NAME)
    if "text_label" not in df.columns:
        raise DataError(f"{Path(cfg.data) / newt.LABELS_CSV} lacks the text_label column (adult / not_adult) Ages needs.")
    df = df.filter(pl.col("task").str.starts_with("ml_age"))
    if df.height == 0:
        raise DataError(f"{Path(cfg.data) / newt.LABELS_CSV} has no ml_age_* tasks; Ages is built from them.")
    stages = set(df["text_label"].unique().to_list())
    if not stages <= {"adult", "not_adult"}:
        raise DataError(f"Ages expects text_label adult or not_adult on ml_age_* rows; found {sorted(stages - {'adult', 'not_adult'})}.")
    return df.with_columns(species=(pl.col("task").rank("dense") - 1).cast(pl.Int64))


def species_names(df: pl.DataFrame) -> tuple[str, ...]:
    tasks = sorted(df["task"].unique().to_list())
    return tuple(SPECIES.get(t, t.removeprefix("ml_age_").replace("_", " ")) for t in tasks)


def read(cfg: Options) -> Examples:
    """One sub-task per setting: its training images (train split, training stage) and test images."""
    df = read_labels(cfg)
    root = Path(cfg.data) / newt.IMAGES_DIR
    ids = df["id"].to_list()
    images = ImageSet(NAME, ids, [root / f"{i}.jpg" for i in ids])
    split, stage, species = df["split"].to_numpy(), df["text_label"].to_numpy(), df["species"].to_numpy()
    parts = []
    for train_stage, test_stage in SETTINGS:
        name = setting_name(train_stage, test_stage)
        for part, want in (("train", train_stage), ("test", test_stage)):
            rows = np.flatnonzero((split == part) & (stage == want))
            parts.append(pl.DataFrame({
                "id": [f"{name}:{ids[i]}" for i in rows], "image": rows.astype(np.int64), "label": species[rows].astype(np.int64),
                "split": [part] * len(rows), "subtask": [name] * len(rows),
            }, schema={"id": pl.Utf8, "image": pl.Int64, "label": pl.Int64, "split": pl.Utf8, "subtask": pl.Utf8}))  # fmt: skip
    return Examples(images, pl.concat(parts), {"": species_names(df)}, subtask_label="setting")


############
# Fixture  #
############


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False, n_train_per_class: int = 6, n_test_per_class: int = 4) -> None:
    """Write NeWT-format files holding the 12 age tasks: each species has its own colour and texture
    at every age, juveniles are paler, so species is learnable across ages.

    With `shuffle_labels`, species are permuted among the images within each (split, age),
    so no image carries its species' signal.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    rows = []
    for species, task in enumerate(sorted(SPECIES)):
        for split, n in (("train", n_train_per_class), ("test", n_test_per_class)):
            for label, stage in ((1, "adult"), (0, "not_adult")):
                for _ in range(n):
                    image_id = fixtures.example_id(rng)
                    img = np.asarray(fixtures.draw(rng, 100 + species, 0, strength=0.55), dtype=np.float64)
                    if stage == "not_adult":
                        img = 0.8 * img + 0.2 * 200.0  # paler plumage: a visible, species-independent age cue
                    h, w = fixtures.save_jpeg(
                        Image.fromarray(img.clip(0, 255).astype(np.uint8)), root / newt.IMAGES_DIR / f"{image_id}.jpg"
                    )
                    rows.append([image_id, "appearance", "age", task, label, stage, split, h, w])
    if shuffle_labels:
        for split in ("train", "test"):
            for stage in ("adult", "not_adult"):
                idx = [k for k, r in enumerate(rows) if r[6] == split and r[5] == stage]
                tasks = [rows[k][3] for k in idx]
                for k, j in zip(idx, rng.permutation(len(idx))):
                    rows[k][3] = tasks[j]
    df = pl.DataFrame(
        rows,
        schema=["id", "task_cluster", "task_subcluster", "task", "label", "text_label", "split", "height", "width"],
        orient="row",
    )
    df.write_csv(root / newt.LABELS_CSV)


# Built from NeWT's files. The search's 5 stratified folds need 5 images of every species; below that, a linear SVC.
SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=newt.RESOURCES,
                              download=newt.check_download, probe=Svm(min_train=10, min_per_class=5), preprocess=("l2",),
                              headline=HEADLINE, routes=("probe", "mllm")))  # fmt: skip
