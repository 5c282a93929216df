"""Hybrids: butterfly hybrid detection from the HDR anomaly challenge (Imageomics, CodaBench 2024-25).

Heliconius erato and H. melpomene are co-mimics; hybrid zones between their subspecies
produce hybrids. The training set holds species A (H. erato) images, including "signal"
hybrids of its two best-represented subspecies; the challenge asks a detector to find
those (major), hybrids of other A subspecies (minor, unseen) and hybrids of the mimic
species' corresponding subspecies (mimic, a different species entirely).
https://github.com/Imageomics/HDR-anomaly-challenge ; images on Zenodo (Cuthill et al.
2019, "Heliconius collection (Cambridge Butterfly)", records listed per image).

Data layout (the challenge's files; images flat under their `filename`, one folder per split):

```
DIR/butterfly_anomaly_train.csv   CAMID, file_url, hybrid_stat (hybrid|non-hybrid), split, zenodo_link,
                                  md5, subspecies, parent_subspecies_1, parent_subspecies_2, filename
DIR/ref_val.csv, DIR/ref_test.csv CAMID, file_url, hybrid_stat (0/1), X, subspecies_ref, filename,
                                  ssp_indicator (major|minor|mimic)
DIR/train/<filename>, DIR/val/<filename>, DIR/test/<filename>
```

Protocol: every image is embedded once; a probe (`biobench.probes.HybridDetector`, i.e. `biobench.challenge.classifier`:
standardise, then an RBF SVC with Platt probabilities or a logistic SGD, classes
balanced) is fit on the training features and scores each image of the evaluation split
by its log-odds of hybrid (P(hybrid) saturates at 1.0, and ties at the top can zero the
recall at a threshold); the score is the challenge metric (`biobench.challenge.scoring`), whose
headline is `challenge_score`, the harmonic mean of the major, minor and mimic recalls at
the 95%-non-hybrid-recall thresholds. With `n_train >= 0` the training set is a seeded
class-balanced sample. Every leaderboard metric gets a 95% bootstrap interval. The
challenge metric needs the scores of the whole reference at once, so this task brings
its own `evaluate` (the spec's escape hatch) instead of a `Metric`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from jaxtyping import Float

from biobench import fixtures, stats
from biobench.challenge import scoring
from biobench.challenge.data import read_training_csv
from biobench.download import Resource
from biobench.evaluation import EvalContext, TaskReport
from biobench.examples import Examples, one_per_image
from biobench.images import ImageSet
from biobench.layouts import missing_data
from biobench.metrics import Metric, Replicates
from biobench.probes import HybridDetector
from biobench.sampling import training_rows
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

NAME = "hybrids"
VERSION = 1
CITATION = """@misc{hdr_anomaly_challenge_2024,
  title={{HDR} Anomaly {ML} Challenge: Butterfly Hybrid Detection},
  author={{Imageomics Institute}},
  year={2024},
  howpublished={\\url{https://github.com/Imageomics/HDR-anomaly-challenge}}
}
@misc{cuthill2019heliconius,
  title={Heliconius collection (Cambridge Butterfly)},
  author={Cuthill, Jennifer F. Hoyal and Guttenberg, Nicholas and Ledger, Sophie and Crowther, Robyn and Huertas, Blanca},
  year={2019},
  publisher={Zenodo},
  doi={10.5281/zenodo.2554218}
}"""

TRAIN_CSV = "butterfly_anomaly_train.csv"
REFERENCE_CSV = {"val": "ref_val.csv", "test": "ref_test.csv"}
REPO_RAW = "https://raw.githubusercontent.com/Imageomics/HDR-anomaly-challenge/main"
CSV_URLS = {
    TRAIN_CSV: f"{REPO_RAW}/files/butterfly_anomaly_train.csv",
    "ref_val.csv": f"{REPO_RAW}/reference_data/ref_val.csv",
    "ref_test.csv": f"{REPO_RAW}/reference_data/ref_test.csv",
}


@dataclasses.dataclass(frozen=True)
class Options:
    """Hybrids options, from the config file's `[hybrids]` table."""

    data: Path
    """Directory with butterfly_anomaly_train.csv, ref_val.csv, ref_test.csv and the train/, val/, test/ image folders."""
    eval_split: Literal["val", "test"] = "test"
    """Score on ref_test.csv + test/ (the challenge's final phase) or ref_val.csv + val/ (development phase)."""
    classifier: Literal["svc", "sgd"] = "svc"
    """Probe giving P(hybrid): 'svc' (RBF SVC, Platt probabilities) or 'sgd' (logistic regression by SGD)."""


def read(cfg: Options) -> Examples:
    """Training images, then the evaluation split's (split 'test'); `group` is major/minor/mimic (null for train)."""
    root = Path(cfg.data)
    train_csv = root / TRAIN_CSV
    ref_csv = root / REFERENCE_CSV[cfg.eval_split]
    for path in (train_csv, ref_csv):
        if not path.is_file():
            raise missing_data(NAME, root, path)
    train = read_training_csv(train_csv)
    ref = scoring.read_reference(ref_csv)
    n_train = train.height
    folders = ["train"] * n_train + [cfg.eval_split] * len(ref.filenames)
    filenames = [*train["filename"].to_list(), *ref.filenames]
    ids = [f"{s}/{f}" for s, f in zip(folders, filenames)]
    images = ImageSet(NAME, ids, [root / s / f for s, f in zip(folders, filenames)])
    labels = np.concatenate([train["label"].to_numpy(), ref.labels]).astype(np.int64)
    columns = {"group": [None] * n_train + [scoring.GROUPS[g] for g in ref.groups], "filename": filenames}
    return one_per_image(images, labels, ["train"] * n_train + ["test"] * len(ref.filenames), columns=columns, info=("filename",))


def evaluate(cfg: Options, examples: Examples, features: Float[np.ndarray, "n d"], ctx: EvalContext) -> TaskReport:
    """Log-odds of hybrid from the probe, then every leaderboard metric with a stratified bootstrap interval."""
    table = examples.table
    x = np.asarray(features, dtype=np.float64)[table["image"].to_numpy()]
    labels = examples.labels()
    split = table["split"].to_numpy()
    train_rows = training_rows(labels, np.flatnonzero(split == "train"), ctx.n_train, ctx.seed, NAME)
    test_rows = np.flatnonzero(split == "test")

    start = time.perf_counter()
    probe = HybridDetector(cfg.classifier, where=f"{NAME} training sample")
    p = probe(x[train_rows], labels[train_rows], x[test_rows], seed=ctx.seed).scores
    seconds_fit = time.perf_counter() - start

    start = time.perf_counter()
    y = labels[test_rows]
    groups = np.array([scoring.GROUPS.index(g) for g in table["group"].to_numpy()[test_rows]], dtype=np.int8)
    board, detailed = scoring.scores_from_metrics(scoring.challenge_metrics(p, y, groups))
    reps = bootstrap(p, y, groups, n_resamples=ctx.n_bootstrap, seed=ctx.seed)
    intervals = {k: stats.percentile_interval(reps[k], board[k]) for k in scoring.LEADERBOARD_KEYS}
    sub_scores = {
        "leaderboard": {k: {"score": board[k], "ci_low": intervals[k][0], "ci_high": intervals[k][1]} for k in board},
        "detailed": detailed,
        "bootstrap": {"n_resamples": ctx.n_bootstrap, "strata": "group x hybrid"},
        "n_train": _counts(labels[train_rows]),
        "n_test": {g: _counts(y[groups == i]) for i, g in enumerate(scoring.GROUPS)},
    }
    filenames = table["filename"].to_numpy()[test_rows]
    info = [{"filename": str(f), "label": int(label), "group": scoring.GROUPS[g]} for f, label, g in zip(filenames, y, groups)]
    low, high = intervals["challenge_score"]
    return TaskReport(
        metric="challenge_score",
        score=board["challenge_score"],
        ci_low=low,
        ci_high=high,
        n_train_actual=len(train_rows),
        example_ids=table["id"].to_numpy()[test_rows].tolist(),
        example_scores=p,
        example_info=info,
        sub_scores=sub_scores,
        seconds_fit=seconds_fit,
        seconds_score=time.perf_counter() - start,
    )


def _counts(y: np.ndarray) -> dict[str, int]:
    return {"hybrid": int(y.sum()), "non_hybrid": int(len(y) - y.sum())}


def bootstrap(
    p: Float[np.ndarray, " n"], y: np.ndarray, groups: np.ndarray, *, n_resamples: int, seed: int
) -> dict[str, Float[np.ndarray, " b"]]:
    """Bootstrap replicates of every leaderboard metric, from one set of resamples.

    Resampling is stratified by (group, hybrid or not): the reference's composition was
    fixed when it was built, and every replicate keeps each group scorable (a plain
    resample can lose every hybrid of a small group, leaving its recall undefined).
    `stats.replicates` draws the (b, n) index arrays; each batch becomes per-example counts
    scored in one vectorised pass (`scoring.challenge_metrics` with weights).
    """
    n = len(p)
    kept: dict[str, list[np.ndarray]] = {k: [] for k in scoring.LEADERBOARD_KEYS}

    def metric(idx: np.ndarray) -> np.ndarray:
        b = idx.shape[0]
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        m = scoring.challenge_metrics(p, y, groups, counts, roc=False)
        for k in kept:
            kept[k].append(m[k])
        return m["challenge_score"]

    stats.replicates(metric, n, n_resamples=n_resamples, seed=seed, strata=bootstrap_strata(y, groups))
    return {k: np.concatenate(v) for k, v in kept.items()}


def bootstrap_strata(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """One stratum per (group, hybrid or not)."""
    return np.asarray(groups, dtype=np.int64) * 2 + np.asarray(y, dtype=np.int64)


def _stored_groups(fields) -> tuple[np.ndarray, np.ndarray]:
    """(labels, group indices) of stored predictions' info (`label`, `group` = major / minor / mimic)."""
    y = np.asarray(fields["label"], dtype=np.int64)
    groups = np.array([scoring.GROUPS.index(g) for g in fields["group"]], dtype=np.int8)
    return y, groups


def replicate_challenge_score(scores: np.ndarray, fields, counts: np.ndarray) -> Float[np.ndarray, " b"]:
    """The challenge score of stored log-odds under each row of draw counts (reports: paired tests, rank intervals)."""
    y, groups = _stored_groups(fields)
    return scoring.challenge_metrics(scores, y, groups, np.rint(counts).astype(np.int64), roc=False)["challenge_score"]


def stored_strata(fields) -> np.ndarray:
    """The bootstrap strata (group x hybrid) of stored predictions."""
    return bootstrap_strata(*_stored_groups(fields))


CHALLENGE_SCORE = Metric("challenge_score", replicates=Replicates(replicate_challenge_score, stored_strata))
"""The metric's name (for listings; `evaluate` computes it), and how reports recompute it from stored predictions."""


############
# Fixture  #
############

# (group, hybrids, non-hybrids, signal strength) per reference split; minor hybrids are
# the hardest (weakest signal), as the unseen non-signal hybrids are in the real data.
FIXTURE_REFERENCE = {
    "val": (("major", 10, 16, 0.4), ("minor", 8, 16, 0.2), ("mimic", 10, 20, 0.3)),
    "test": (("major", 12, 20, 0.4), ("minor", 10, 20, 0.2), ("mimic", 12, 24, 0.3)),
}
FIXTURE_TRAIN = (20, 60, 0.4)  # hybrids, non-hybrids, strength
_STYLE = 40  # fixtures.class_style group shared by every hybrid / non-hybrid image
_SUBSPECIES = {
    "major": ("malleti", "lativitta", "notabilis x lativitta"),
    "minor": ("cyrbia", "venus", "cyrbia x venus"),
    "mimic": ("plesseni", "notabilis", "plesseni x malleti"),
}


def _fixture_name(kind: str, i: int, base: str) -> tuple[str, str]:
    """(file name, format): mostly .jpg/.JPG, some with spaces, some .jpeg and .png, as real folders are."""
    if i % 11 == 3:
        return f"{base}.png", "PNG"
    if i % 7 == 2:
        return f"{base} copy.JPG", "JPEG"
    if i % 13 == 5:
        return f"{base}.jpeg", "JPEG"
    return (f"{base}.jpg" if kind == "train" else f"{base}.JPG"), "JPEG"


def _save(img, path: Path, fmt: str) -> str:
    if fmt == "JPEG":
        fixtures.save_jpeg(img, path)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, format=fmt)
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
    """Write a small hybrids dataset in the real layout: a training CSV with the real columns,
    val/test reference CSVs with major/minor/mimic groups, and their images.

    Hybrids share a visible colour/stripe style (strong for major, weaker for mimic,
    weakest for minor), so `builtin:pixel-stats` features separate them. With
    `shuffle_labels`, labels are permuted after the images are drawn (within the training
    set, and within each group of each reference set), leaving no signal.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    camid = iter(range(10_000, 100_000))

    n_hyb, n_non, strength = FIXTURE_TRAIN
    labels = [1] * n_hyb + [0] * n_non
    rows = []
    for i, label in enumerate(labels):
        cam = f"CAM{next(camid):06d}"
        name, fmt = _fixture_name("train", i, cam)
        md5 = _save(fixtures.draw(rng, _STYLE, label, strength=strength), root / "train" / name, fmt)
        record = 1748277 + i % 3
        rows.append(
            [cam, f"https://zenodo.org/record/{record}/files/{cam}_d.JPG", label, "train", f"https://zenodo.org/record/{record}", md5, name]
        )
    if shuffle_labels:
        perm = rng.permutation(len(rows))
        shuffled = [rows[j][2] for j in perm]
        for r, label in zip(rows, shuffled):
            r[2] = label
    train = [
        {
            "CAMID": cam,
            "file_url": url,
            "hybrid_stat": "hybrid" if label else "non-hybrid",
            "split": "train",
            "zenodo_link": link,
            "md5": md5,
            "subspecies": None if label else ("8.0", "9.0", "2.0", "7.0")[k % 4],
            "parent_subspecies_1": "8.0" if label else None,
            "parent_subspecies_2": "9.0" if label else None,
            "filename": name,
        }
        for k, (cam, url, label, _, link, md5, name) in enumerate(rows)
    ]
    pl.DataFrame(train, schema={c: pl.Utf8 for c in train[0]}).write_csv(root / TRAIN_CSV)

    x_counter = iter(range(30_000, 90_000, 7))
    for split, spec in FIXTURE_REFERENCE.items():
        ref_rows = []
        for group, n_h, n_n, strength in spec:
            group_rows = []
            for label in [1] * n_h + [0] * n_n:
                cam, x = f"F{next(camid)}", next(x_counter)
                name, fmt = _fixture_name(split, len(ref_rows) + len(group_rows), f"{x}_{cam}_d")
                _save(fixtures.draw(rng, _STYLE, label, strength=strength), root / split / name, fmt)
                group_rows.append(
                    {
                        "CAMID": cam,
                        "file_url": f"https://zenodo.org/record/2555086/files/{cam}_d.JPG",
                        "hybrid_stat": label,
                        "X": x,
                        "subspecies_ref": _SUBSPECIES[group][2 if label else len(group_rows) % 2],
                        "filename": name,
                        "ssp_indicator": group,
                    }
                )
            if shuffle_labels:
                shuffled = [group_rows[j]["hybrid_stat"] for j in rng.permutation(len(group_rows))]
                for r, label in zip(group_rows, shuffled):
                    r["hybrid_stat"] = label
            ref_rows.extend(group_rows)
        order = rng.permutation(len(ref_rows))  # the real files are not grouped
        pl.DataFrame([ref_rows[j] for j in order]).write_csv(root / REFERENCE_CSV[split])


############
# Download #
############


RESOURCES = tuple(Resource(url, name, None, (name,), extract=False) for name, url in CSV_URLS.items())
"""The challenge's CSVs (GitHub); `download_images` then fetches every image they list."""


def download_images(root: Path) -> None:
    """Fetch every image the CSVs list (Zenodo) into `root`/<split>/<filename>.

    Training images are md5-checked against the CSV; reference images have no published
    checksum. Files already present are kept, so an interrupted download resumes. The
    images are Zenodo's originals; the CodaBench copies of val/test may be preprocessed
    differently, so scores here can differ slightly from the leaderboard's.
    """
    from biobench import download as dl

    root = Path(root)
    train = read_training_csv(root / TRAIN_CSV)
    jobs = [("train", f, u, m) for f, u, m in zip(train["filename"], train["file_url"], train["md5"])]
    for split, csv_name in REFERENCE_CSV.items():
        ref = pl.read_csv(root / csv_name, infer_schema=False)
        jobs += [(split, f, u, None) for f, u in zip(ref["filename"], ref["file_url"])]
    dl.fetch_many("hybrids images", [(u, root / split / f, m) for split, f, u, m in jobs])


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES,
                              download=download_images, probe=lambda cfg: HybridDetector(cfg.classifier), evaluate=evaluate, kind="detection",
                              metric=CHALLENGE_SCORE))  # fmt: skip
