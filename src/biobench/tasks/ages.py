"""Ages: does a model recognise a bird species across its stages of life?

Built from NeWT's 12 `ml_age_*` tasks (Van Horn et al., CVPR 2021; cite NeWT when you
use it). The label is the species (the dense rank of the task name: 12 classes); the
NeWT label (adult vs not adult, in `text_label`) picks the images of three settings:

1. adult -> adult: train and test on adults (the baseline);
2. not_adult -> not_adult: train and test on juveniles (a drop mirrors the pre-training data);
3. adult -> not_adult: train on adults, test on juveniles, the headline score: are
   representations robust to stage of life?

Data: the NeWT directory itself (`newt2021_labels.csv`, `newt2021_images/`).

Protocol (features): L2-normalise, centre on the setting's training mean, L2-normalise
again, then NeWT's SVM search (`biobench.probes.svm`), multi-class; when some species has
fewer than 5 training images (the search's folds), a plain linear SVC, as NeWT does below
10 images. `n_train` is the
number of training images per setting, sampled class-balanced over species and seeded
per (seed, setting); -1 = all. Protocol (MLLM): the same settings as 12-way questions,
with `n_train` in-context examples (`biobench.mllm.evaluate`).

Metric: accuracy on adult -> not_adult, with a bootstrap 95% interval; sub-scores give
accuracy per setting. Predictions of all three settings are stored (ids
`SETTING:IMAGE_ID`); the seed kept only the last setting's predictions.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import polars as pl
from jaxtyping import Float
from PIL import Image

from biobench import fixtures, stats
from biobench.errors import DataError
from biobench.images import ImageSet
from biobench.sampling import balanced_sample, task_rng
from biobench.tasks import newt
from biobench.tasks.base import EvalContext, TaskReport

NAME = "ages"
VERSION = 1
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
class Config:
    """Ages options, from the config file's `[ages]` table."""

    data: Path
    """The NeWT directory (newt2021_labels.csv and newt2021_images/)."""


def setting_name(train: str, test: str) -> str:
    return f"{train}/{test}"


def read_labels(cfg: Config) -> pl.DataFrame:
    """NeWT's age rows with a `species` column (0..11, dense rank of the task name), in file order."""
    df = newt.read_labels(newt.Config(data=cfg.data))
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


def image_set(cfg: Config) -> ImageSet:
    df = read_labels(cfg)
    root = Path(cfg.data) / newt.IMAGES_DIR
    ids = df["id"].to_list()
    return ImageSet(NAME, ids, [root / f"{i}.jpg" for i in ids], table=df)


def split_rows(df: pl.DataFrame, train_stage: str, test_stage: str) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a setting's training and test images."""
    split, stage = df["split"].to_numpy(), df["text_label"].to_numpy()
    return np.flatnonzero((split == "train") & (stage == train_stage)), np.flatnonzero((split == "test") & (stage == test_stage))


def _report(
    parts: list[tuple[str, list[str], np.ndarray, list[dict]]], ctx: EvalContext, n_train_actual: int, params=None, **extra
) -> TaskReport:
    """A TaskReport from per-setting (name, image ids, 0/1 scores, infos): headline = adult -> not_adult."""
    by_name = {name: scores for name, _, scores, _ in parts}
    if HEADLINE not in by_name or len(by_name[HEADLINE]) == 0:
        raise DataError("Ages needs adult training images and not_adult test images for its headline setting; none found.")
    headline = by_name[HEADLINE]
    ci = stats.mean_ci(headline, n_resamples=ctx.n_bootstrap, seed=ctx.seed)
    low, high = ci.low, ci.high
    return TaskReport(
        metric="accuracy",
        score=float(headline.mean()),
        ci_low=low,
        ci_high=high,
        n_train_actual=n_train_actual,
        example_ids=[f"{name}:{i}" for name, ids, _, _ in parts for i in ids],
        example_scores=np.concatenate([s for _, _, s, _ in parts]),
        example_info=[item for _, _, _, infos in parts for item in infos],
        sub_scores={
            "setting": {
                n: {"accuracy": float(s.mean()), "n_test": len(s)} | ({"params": params[n]} if params else {})
                for n, s in by_name.items()
                if len(s)
            }
        },
        **extra,
    )


SEARCH_FOLDS = 5
"""The NeWT search's stratified folds: it needs at least this many training images of every species."""


def _probe(x_train, y_train, x_test, seed: int) -> tuple[np.ndarray, dict]:
    """NeWT's SVM protocol; with fewer than `SEARCH_FOLDS` images of some species (12 classes make small
    `n_train` common), the protocol's small-data probe (a linear SVC) instead, since 5-fold search cannot run."""
    from biobench.probes import svm  # scikit-learn loads only when a probe is fit

    counts = np.unique(y_train, return_counts=True)[1]
    if len(counts) > 1 and counts.min() < SEARCH_FOLDS:
        import sklearn.svm

        return sklearn.svm.SVC(kernel="linear").fit(x_train, y_train).predict(x_test), {"svc__kernel": "linear", "svc__C": 1.0}
    return svm.fit_predict(x_train, y_train, x_test, seed=seed)


def evaluate(cfg: Config, images: ImageSet, features: Float[np.ndarray, "n d"], ctx: EvalContext) -> TaskReport:
    df = images.table if images.table is not None else read_labels(cfg)
    x = newt.l2_normalize(np.asarray(features, dtype=np.float64))
    y = df["species"].to_numpy()
    ids = df["id"].to_list()
    parts, n_used, seconds_fit, chosen = [], 0, 0.0, {}
    for train_stage, test_stage in SETTINGS:
        name = setting_name(train_stage, test_stage)
        train, test = split_rows(df, train_stage, test_stage)
        if len(train) == 0 or len(test) == 0:
            continue
        train = train[balanced_sample(y[train], ctx.n_train, task_rng(ctx.seed, name))]
        start = time.perf_counter()
        x_train, x_test = newt.centre_on_train(x[train], x[test])
        pred, params = _probe(x_train, y[train], x_test, ctx.seed)
        seconds_fit += time.perf_counter() - start
        n_used, chosen[name] = max(n_used, len(train)), params
        parts.append((
            name,
            [ids[i] for i in test],
            (pred == y[test]).astype(np.float64),
            [{"setting": name, "label": int(t), "pred": int(p)} for t, p in zip(y[test], pred)],
        ))
    return _report(parts, ctx, n_used, chosen, seconds_fit=seconds_fit)


def evaluate_mllm(cfg: Config, client, ctx: EvalContext) -> TaskReport:
    """The three settings as 12-way questions to a multimodal LLM with `ctx.n_train` in-context examples."""
    from biobench.mllm.evaluate import Group, classify, summary

    start = time.perf_counter()
    df = read_labels(cfg)
    names = species_names(df)
    root = Path(cfg.data) / newt.IMAGES_DIR
    paths = [root / f"{i}.jpg" for i in df["id"]]
    ids, y = df["id"].to_list(), df["species"].to_numpy()
    groups = []
    for train_stage, test_stage in SETTINGS:
        train, test = split_rows(df, train_stage, test_stage)
        if len(train) == 0 or len(test) == 0:
            continue
        groups.append(Group(
            name=setting_name(train_stage, test_stage),
            classnames=names,
            train_paths=[paths[i] for i in train],
            train_labels=y[train],
            test_ids=[ids[i] for i in test],
            test_paths=[paths[i] for i in test],
            test_labels=y[test],
        ))  # fmt: skip
    outcomes = classify(client, groups, ctx)
    s = summary(outcomes, {g.name: g.classnames for g in groups})
    seconds_fit = time.perf_counter() - start
    parts = []
    for g in groups:
        rows = [k for k, o in enumerate(outcomes) if o.group == g.name]
        parts.append((g.name, [outcomes[k].example_id for k in rows], s.scores[rows], [{"setting": g.name, **s.info[k]} for k in rows]))
    return _report(parts, ctx, s.n_shots_max, seconds_fit=seconds_fit, cost_usd=s.cost_usd, n_failed=s.n_failed, parse_rate=s.parse_rate)


############
# Fixture  #
############


def make_fixture(
    root: Path, *, seed: int = 0, shuffle_labels: bool = False, n_train_per_class: int = 6, n_test_per_class: int = 4
) -> None:
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
                    h, w = fixtures.save_jpeg(Image.fromarray(img.clip(0, 255).astype(np.uint8)), root / newt.IMAGES_DIR / f"{image_id}.jpg")
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


def download(root: Path) -> None:
    """Ages uses NeWT's files: download NeWT into `root`."""
    newt.download(root)
