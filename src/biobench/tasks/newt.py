"""NeWT: Natural World Tasks, 164 binary classification tasks on natural-world images.

Van Horn, Cole, Beery, Wilber, Belongie and Mac Aodha. "Benchmarking Representation
Learning for Natural World Image Collections." CVPR 2021.
https://arxiv.org/abs/2103.16483 , https://github.com/visipedia/newt

Data layout (the dataset's own):

```
DIR/newt2021_labels.csv     id, task_cluster, task_subcluster, task, label (0/1), text_label,
                            split (train/test), height, width; one row per image
DIR/newt2021_images/<id>.jpg
```

Protocol (as biobench and small_data_metrics ran it): every image is embedded once and
L2-normalised. For each task, features are centred on the task's training mean and
L2-normalised again; an SVM is fit with the NeWT search (`biobench.probes.svm`) and
scored on the task's test images. With `n_train >= 0`, each task's training set is a
seeded class-balanced sample of `n_train` images. The score is accuracy pooled over
all test images of all included tasks, with a bootstrap 95% interval that resamples
whole tasks (the 164 tasks are clusters: a task's images share its difficulty; with one
task selected, its images); sub-scores give accuracy per cluster, subcluster and task.

The recipe: `read` (the labels CSV as `Examples`, one sub-task per NeWT task), the SVM
probe, `("l2", "centre", "l2")` preprocessing, accuracy; the routes do the rest. The
MLLM route asks each task as "'A' or 'B'?" with class names from `newt_classnames`
through each row's `text_label` (the seeds used the table's raw keys in dictionary
order, so the names in the prompt and the 0/1 labels could disagree).

Tasks can be filtered in the config's `[newt]` table (`tasks`, `include_clusters`,
`include_subclusters`, `exclude_*`): a task is kept when it matches any include filter
(or there are none) and no exclude filter; exclusion wins.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import polars as pl

from biobench import fixtures
from biobench.download import Resource
from biobench.errors import DataError
from biobench.examples import Examples
from biobench.images import ImageSet
from biobench.layouts import missing_data, tables
from biobench.metrics import SUBTASK_ACCURACY
from biobench.probes import Svm
from biobench.tasks import register_task
from biobench.tasks.newt_classnames import CLASSNAMES
from biobench.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

NAME = "newt"
VERSION = 1
CITATION = """@inproceedings{van2021benchmarking,
  title={Benchmarking Representation Learning for Natural World Image Collections},
  author={Van Horn, Grant and Cole, Elijah and Beery, Sara and Wilber, Kimberly and Belongie, Serge and Mac Aodha, Oisin},
  booktitle={Computer Vision and Pattern Recognition},
  year={2021}
}"""

LABELS_CSV = "newt2021_labels.csv"
IMAGES_DIR = "newt2021_images"
REQUIRED_COLUMNS = ("id", "task", "task_cluster", "task_subcluster", "label", "split")

IMAGES_URL = "https://ml-inat-competition-datasets.s3.amazonaws.com/newt/newt2021_images.tar.gz"
IMAGES_MD5 = "b04a56a5b1ffda87f16e6d4f81f9d38e"
LABELS_URL = "https://ml-inat-competition-datasets.s3.amazonaws.com/newt/newt2021_labels.csv.tar.gz"
LABELS_MD5 = "4cb26d0ee085904887b1ca14dcb893e7"


@dataclasses.dataclass(frozen=True)
class Options:
    """NeWT options, from the config file's `[newt]` table."""

    data: Path
    """Directory holding newt2021_labels.csv and newt2021_images/."""
    tasks: tuple[str, ...] = ()
    """Run only these tasks (plus any matched by the include filters below)."""
    include_clusters: tuple[str, ...] = ()
    """Run tasks in these clusters (appearance, behavior, context, counting, gestalt)."""
    include_subclusters: tuple[str, ...] = ()
    """Run tasks in these subclusters (e.g. species, age, health)."""
    exclude_tasks: tuple[str, ...] = ()
    """Never run these tasks."""
    exclude_clusters: tuple[str, ...] = ()
    """Never run tasks in these clusters."""
    exclude_subclusters: tuple[str, ...] = ()
    """Never run tasks in these subclusters."""


def include_task(cfg: Options, task: str, cluster: str, subcluster: str | None) -> bool:
    """Whether the filters keep `task`: exclusion wins; with no include filter everything is included."""
    if task in cfg.exclude_tasks or cluster in cfg.exclude_clusters:
        return False
    if subcluster and subcluster in cfg.exclude_subclusters:
        return False
    if not (cfg.tasks or cfg.include_clusters or cfg.include_subclusters):
        return True
    return task in cfg.tasks or cluster in cfg.include_clusters or bool(subcluster and subcluster in cfg.include_subclusters)


def read_labels(cfg: Options, task: str = NAME) -> pl.DataFrame:
    """The labels CSV, validated, keeping the rows of tasks that pass the filters (in file order).

    `task` names the task reading it (Ages reads NeWT's files) in error messages.
    """
    path = Path(cfg.data) / LABELS_CSV
    if not path.is_file():
        raise missing_data(task, Path(cfg.data), path)
    try:
        df = pl.read_csv(path, schema_overrides={"id": pl.Utf8, "task_subcluster": pl.Utf8, "split": pl.Utf8})
    except Exception as err:
        raise DataError(f"Cannot parse {path}: {err}") from None
    tables.require_columns(task, df, path, REQUIRED_COLUMNS)
    df = df.with_columns(pl.col("task_subcluster").fill_null(""))
    df = df.with_row_index("_line", offset=2)
    tables.require_values(task, df, path, "label", (0, 1))
    tables.require_values(task, df, path, "split", ("train", "test"))
    tables.require_unique(task, df, path, "id", what="image id")

    groups = df.group_by("task").agg(pl.col("task_cluster").first(), pl.col("task_subcluster").first())
    keep = {t for t, c, s in groups.iter_rows() if include_task(cfg, t, c, s or None)}
    unknown = [t for t in cfg.tasks if t not in set(groups["task"])]
    if unknown:
        logger.warning("[newt] tasks not in %s: %s", path, ", ".join(unknown))
    if not keep:
        raise DataError(f"No NeWT task in {path} passes the [newt] filters; loosen them.")
    return df.filter(pl.col("task").is_in(sorted(keep))).drop("_line")


def class_names(task: str, text_labels: dict[int, str]) -> tuple[str, str]:
    """Prompt names of classes 0 and 1 of `task`, given each label's text_label."""
    table = CLASSNAMES.get(task, {})
    names = tuple(table.get(text_labels[i]) or text_labels[i].replace("_", " ") for i in (0, 1))
    if names[0] == names[1]:
        names = (f"{names[0]} (0)", f"{names[1]} (1)")
    return names  # type: ignore[return-value]


def read(cfg: Options) -> Examples:
    """One example per image; a sub-task per NeWT task, with its cluster and subcluster."""
    df = read_labels(cfg)
    root = Path(cfg.data) / IMAGES_DIR
    ids = df["id"].to_list()
    images = ImageSet(NAME, ids, [root / f"{i}.jpg" for i in ids])
    classnames = {}
    if "text_label" in df.columns:  # MLLM prompts name the classes
        for (task,), rows in df.group_by("task"):
            texts = {int(label): str(t) for label, t in rows.select("label", "text_label").unique().iter_rows()}
            if set(texts) == {0, 1}:
                classnames[task] = class_names(task, texts)
    table = pl.DataFrame({
        "id": ids,
        "image": np.arange(len(ids)),
        "label": df["label"].cast(pl.Int64),
        "split": df["split"],
        "subtask": df["task"],
        "cluster": df["task_cluster"],
        "subcluster": df["task_subcluster"],
    })  # fmt: skip
    return Examples(images, table, classnames, info=("cluster", "subcluster"), subtask_label="task")


############
# Fixture  #
############

FIXTURE_TASKS = (
    # task, cluster, subcluster ("" = none: an empty field, as in the real file), text labels for 0 and 1
    ("ml_age_coopers_hawk", "appearance", "age", ("not_adult", "adult")),
    ("ml_age_bald_eagle", "appearance", "age", ("not_adult", "adult")),
    ("nabirds_species_classification_amekes_merlin", "appearance", "species", ("american_kestrel", "merlin")),
    ("fgvcx_plant_pathology_healthy_vs_sick", "appearance", "health", ("healthy", "sick")),
    ("ml_tag_nest", "context", "", ("no_nest", "nest")),
    ("ml_bio_raptor_utility_pole", "context", "", ("neg", "raptor_on_pole")),
    ("inat_non_species_mating_danaus_plexippus", "behavior", "", ("not_mating", "mating")),
)


def make_fixture(
    root: Path, *, seed: int = 0, shuffle_labels: bool = False, n_train_per_class: int = 10, n_test_per_class: int = 10
) -> None:
    """Write a NeWT-format dataset: 7 tasks over 3 clusters, each class with a visible colour/texture signal.

    With `shuffle_labels`, labels are permuted within each task and split after the
    images are drawn, so no image carries information about its label.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    rows = []
    for group, (task, cluster, subcluster, text_labels) in enumerate(FIXTURE_TASKS):
        strength = 0.2 + 0.05 * group  # some tasks easy, some hard, like the real ones
        for split, n in (("train", n_train_per_class), ("test", n_test_per_class)):
            split_rows = []
            for label in (0, 1):
                for _ in range(n):
                    image_id = fixtures.example_id(rng)
                    img = fixtures.draw(rng, group, label, strength=strength)
                    h, w = fixtures.save_jpeg(img, root / IMAGES_DIR / f"{image_id}.jpg")
                    split_rows.append([image_id, cluster, subcluster or None, task, label, "", split, h, w])
            if shuffle_labels:
                # Within a split, so train and test labels are independent of the images and of each other.
                shuffled = [split_rows[j][4] for j in rng.permutation(len(split_rows))]
                for r, label in zip(split_rows, shuffled):
                    r[4] = label
            for r in split_rows:
                r[5] = text_labels[r[4]]
            rows.extend(split_rows)
    df = pl.DataFrame(
        rows,
        schema=["id", "task_cluster", "task_subcluster", "task", "label", "text_label", "split", "height", "width"],
        orient="row",
    )
    df.write_csv(root / LABELS_CSV)


############
# Download #
############


RESOURCES = (
    Resource(LABELS_URL, "newt2021_labels.csv.tar.gz", LABELS_MD5, (LABELS_CSV,)),
    Resource(IMAGES_URL, "newt2021_images.tar.gz", IMAGES_MD5, (f"{IMAGES_DIR}/*.jpg",)),
)
"""Labels ~1 MB, images ~4.1 GB, with the published md5 sums."""


def check_download(root: Path) -> None:
    """After unpacking: every labelled image is there."""
    n_rows = pl.read_csv(Path(root) / LABELS_CSV, columns=["id"]).height
    n_images = sum(1 for _ in (Path(root) / IMAGES_DIR).glob("*.jpg"))
    if n_images < n_rows:
        raise DataError(f"NeWT in {root}: {n_rows} labelled images but only {n_images} files; rerun the download.")


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES, download=check_download,
                              probe=Svm(min_train=10), preprocess=("l2", "centre", "l2"), routes=("probe", "mllm"),
                              metric=SUBTASK_ACCURACY))  # fmt: skip
