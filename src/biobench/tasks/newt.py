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
all test images of all included tasks, with a bootstrap 95% interval; sub-scores give
accuracy per cluster, subcluster and task.

Tasks can be filtered in the config's `[newt]` table (`tasks`, `include_clusters`,
`include_subclusters`, `exclude_*`): a task is kept when it matches any include filter
(or there are none) and no exclude filter; exclusion wins.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
from jaxtyping import Float, Int

from biobench import fixtures, stats
from biobench.errors import DataError
from biobench.images import ImageSet
from biobench.sampling import balanced_sample, task_rng
from biobench.tasks.base import EvalContext, TaskReport

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
class Config:
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


def include_task(cfg: Config, task: str, cluster: str, subcluster: str | None) -> bool:
    """Whether the filters keep `task`: exclusion wins; with no include filter everything is included."""
    if task in cfg.exclude_tasks or cluster in cfg.exclude_clusters:
        return False
    if subcluster and subcluster in cfg.exclude_subclusters:
        return False
    if not (cfg.tasks or cfg.include_clusters or cfg.include_subclusters):
        return True
    return (
        task in cfg.tasks
        or cluster in cfg.include_clusters
        or bool(subcluster and subcluster in cfg.include_subclusters)
    )


def read_labels(cfg: Config) -> pl.DataFrame:
    """The labels CSV, validated, keeping the rows of tasks that pass the filters (in file order)."""
    path = Path(cfg.data) / LABELS_CSV
    if not path.is_file():
        raise DataError(
            f"NeWT labels not found: {path}. Download NeWT with `biobench download newt --dir {cfg.data}` "
            f"or write a small test copy with `biobench fixture newt --dir {cfg.data}`."
        )
    try:
        df = pl.read_csv(path, schema_overrides={"id": pl.Utf8, "task_subcluster": pl.Utf8, "split": pl.Utf8})
    except Exception as err:
        raise DataError(f"Cannot parse {path}: {err}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}.")
    df = df.with_columns(pl.col("task_subcluster").fill_null(""))
    bad_label = df.filter(~pl.col("label").is_in([0, 1]))
    if bad_label.height:
        row = bad_label.row(0, named=True)
        raise DataError(f"{path}: label must be 0 or 1; image {row['id']} has {row['label']!r}.")
    bad_split = df.filter(~pl.col("split").is_in(["train", "test"]))
    if bad_split.height:
        row = bad_split.row(0, named=True)
        raise DataError(f"{path}: split must be train or test; image {row['id']} has {row['split']!r}.")
    dupes = df.filter(pl.col("id").is_duplicated())
    if dupes.height:
        raise DataError(f"{path}: image id {dupes['id'][0]} appears {dupes.height} times; ids must be unique.")

    groups = df.group_by("task").agg(pl.col("task_cluster").first(), pl.col("task_subcluster").first())
    keep = {
        t for t, c, s in groups.iter_rows() if include_task(cfg, t, c, s or None)
    }
    unknown = [t for t in cfg.tasks if t not in set(groups["task"])]
    if unknown:
        logger.warning("[newt] tasks not in %s: %s", path, ", ".join(unknown))
    if not keep:
        raise DataError(f"No NeWT task in {path} passes the [newt] filters; loosen them.")
    return df.filter(pl.col("task").is_in(sorted(keep)))


def image_set(cfg: Config) -> ImageSet:
    df = read_labels(cfg)
    root = Path(cfg.data) / IMAGES_DIR
    ids = df["id"].to_list()
    return ImageSet(NAME, ids, [root / f"{i}.jpg" for i in ids], table=df)


def l2_normalize(x: Float[np.ndarray, "n d"]) -> Float[np.ndarray, "n d"]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _fit_one(
    x_train: Float[np.ndarray, "n d"], y_train: Int[np.ndarray, " n"], x_test: Float[np.ndarray, "m d"], seed: int
) -> tuple[np.ndarray, dict]:
    from biobench.probes import svm  # scikit-learn loads only when a probe is fit

    x_train, x_test = centre_on_train(x_train, x_test)
    return svm.fit_predict(x_train, y_train, x_test, seed=seed)


def centre_on_train(
    x_train: Float[np.ndarray, "n d"], x_test: Float[np.ndarray, "m d"]
) -> tuple[Float[np.ndarray, "n d"], Float[np.ndarray, "m d"]]:
    """The protocol's per-task step: subtract the training mean, then L2-normalise both sets."""
    mean = x_train.mean(axis=0, keepdims=True)
    return l2_normalize(x_train - mean), l2_normalize(x_test - mean)


def evaluate(cfg: Config, images: ImageSet, features: Float[np.ndarray, "n d"], ctx: EvalContext) -> TaskReport:
    df = images.table if images.table is not None else read_labels(cfg)
    x = l2_normalize(np.asarray(features, dtype=np.float64))
    labels = df["label"].to_numpy()
    is_train = (df["split"] == "train").to_numpy()
    tasks = df["task"].to_numpy()

    jobs, meta = [], []
    for task in sorted(set(tasks)):
        rows = np.flatnonzero(tasks == task)
        train, test = rows[is_train[rows]], rows[~is_train[rows]]
        if len(test) == 0 or len(train) == 0:
            logger.warning("NeWT task %s has %d train and %d test images; skipped.", task, len(train), len(test))
            continue
        train = train[balanced_sample(labels[train], ctx.n_train, task_rng(ctx.seed, task))]
        jobs.append((x[train], labels[train], x[test], ctx.seed))
        first = df.row(int(rows[0]), named=True)
        meta.append((task, first["task_cluster"], first["task_subcluster"], train, test))

    import joblib

    start = time.perf_counter()
    n_jobs = min(ctx.n_jobs, len(jobs))
    outputs = joblib.Parallel(n_jobs=n_jobs)(joblib.delayed(_fit_one)(*job) for job in jobs)
    seconds_fit = time.perf_counter() - start

    start = time.perf_counter()
    ids, scores, info, task_meta = [], [], [], {}
    for (task, cluster, subcluster, train, test), (pred, params) in zip(meta, outputs):
        scores.append((pred == labels[test]).astype(np.float64))
        ids.extend(df["id"][test].to_list())
        info.extend(
            {"task": task, "cluster": cluster, "subcluster": subcluster or None, "label": int(y), "pred": int(p)}
            for y, p in zip(labels[test], pred)
        )
        task_meta[task] = {"n_train": int(len(train)), "params": params}
    return accuracy_report(
        ids,
        np.concatenate(scores),
        info,
        ctx,
        n_train_actual=max(m["n_train"] for m in task_meta.values()),
        task_meta=task_meta,
        seconds_fit=seconds_fit,
        started=start,
    )


def accuracy_report(
    ids: list[str],
    scores: Float[np.ndarray, " n"],
    info: list[dict],
    ctx: EvalContext,
    *,
    n_train_actual: int,
    task_meta: dict[str, dict] | None = None,
    seconds_fit: float,
    started: float,
    **extra,
) -> TaskReport:
    """NeWT's score, shared by the probe and MLLM routes: accuracy pooled over every test
    image with a plain bootstrap interval, and sub-scores per cluster, subcluster and task
    (each `info` row names its task, cluster and subcluster; `task_meta` adds per-task details)."""
    per: dict[str, dict[str, list[float]]] = {"cluster": defaultdict(list), "subcluster": defaultdict(list), "task": defaultdict(list)}
    for row, score in zip(info, scores, strict=True):
        per["cluster"][row["cluster"]].append(score)
        per["subcluster"][row["subcluster"] or "(none)"].append(score)
        per["task"][row["task"]].append(score)
    task_meta = task_meta or {}
    sub_scores = {
        level: {
            name: {"accuracy": float(np.mean(parts)), "n_test": len(parts)} | (task_meta.get(name, {}) if level == "task" else {})
            for name, parts in sorted(groups.items())
        }
        for level, groups in per.items()
    }
    ci = stats.mean_ci(scores, n_resamples=ctx.n_bootstrap, seed=ctx.seed)
    return TaskReport(
        metric="accuracy",
        score=ci.estimate,
        ci_low=ci.low,
        ci_high=ci.high,
        n_train_actual=n_train_actual,
        example_ids=ids,
        example_scores=scores,
        example_info=info,
        sub_scores=sub_scores,
        seconds_fit=seconds_fit,
        seconds_score=time.perf_counter() - started,
        **extra,
    )


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


########
# MLLM #
########


def evaluate_mllm(cfg: Config, client, ctx: EvalContext) -> TaskReport:
    """NeWT answered by a multimodal LLM with `ctx.n_train` in-context examples (see `biobench.tasks.newt_mllm`)."""
    from biobench.tasks import newt_mllm

    return newt_mllm.evaluate(cfg, client, ctx)


############
# Download #
############


def download(
    root: Path,
    *,
    labels_url: str = LABELS_URL,
    images_url: str = IMAGES_URL,
    labels_md5: str | None = LABELS_MD5,
    images_md5: str | None = IMAGES_MD5,
) -> None:
    """Fetch NeWT (labels ~1 MB, images ~4.1 GB), verify the published md5 sums and unpack into `root`.

    Interrupted downloads resume when the command is run again.
    """
    from biobench import download as dl

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    labels_tar = dl.fetch(labels_url, root / "newt2021_labels.csv.tar.gz", md5=labels_md5, desc="NeWT labels")
    dl.extract(labels_tar, root, desc="extract NeWT labels")
    images_tar = dl.fetch(images_url, root / "newt2021_images.tar.gz", md5=images_md5, desc="NeWT images")
    dl.extract(images_tar, root, desc="extract NeWT images")
    n_rows = pl.read_csv(root / LABELS_CSV, columns=["id"]).height
    n_images = sum(1 for _ in (root / IMAGES_DIR).glob("*.jpg"))
    if n_images < n_rows:
        raise DataError(f"NeWT in {root}: {n_rows} labelled images but only {n_images} files; rerun the download.")
    for archive in (labels_tar, images_tar):
        archive.unlink()
