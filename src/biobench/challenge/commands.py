"""`biobench challenge score | ingest | baseline | bundle`: the HDR challenge from the command line.

Light to import (no numpy, torch or scikit-learn until a command runs), so `biobench --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro

from biobench.config import Settings, default_workers

OptionalPath = Annotated[Path | None, tyro.conf.arg(metavar="PATH")]
"""A path option that may be left out (shown as PATH in --help, not {None}|PATH)."""


@dataclasses.dataclass(frozen=True)
class Score:
    """Score a predictions file against a reference CSV with the challenge metric."""

    ref: Path
    """Reference CSV: filename, hybrid_stat (0/1), ssp_indicator (major|minor|mimic)."""
    pred: Path
    """Predictions: one `filename,score` line per image (higher = more likely a hybrid)."""
    out: Path = Path("scores.json")
    """Leaderboard scores (JSON with the challenge's keys)."""
    detailed: OptionalPath = None
    """Detailed scores (thresholds, precision, F1, accuracy, ROC AUC); default: OUT with `_detailed` added to its name."""


@dataclasses.dataclass(frozen=True)
class Ingest:
    """Run a submission folder's model.py on every image of a flat folder; write predictions.txt."""

    submission: Path
    """Folder with model.py (class Model with load() and predict(PIL.Image) -> float)."""
    images: Path
    """Flat folder of .jpg/.jpeg/.png images."""
    out: Path
    """Folder to write predictions.txt into."""
    install_requirements: bool = False
    """pip-install the submission's requirements.txt first, as CodaBench does."""


@dataclasses.dataclass(frozen=True)
class Baseline:
    """Frozen backbone features + a probe -> a ready-to-zip submission folder."""

    backbone: str
    """ORG:CKPT, e.g. open-clip:hf-hub:imageomics/bioclip or timm:vit_base_patch14_reg4_dinov2.lvd142m."""
    train_csv: Path
    """The training metadata (butterfly_anomaly_train.csv: filename, hybrid_stat hybrid|non-hybrid, ...)."""
    images: Path
    """Folder holding the training images under their `filename`."""
    out: Path
    """Submission folder to write (model.py, classifier.pkl, metadata.json, requirements.txt)."""
    classifier: Literal["svc", "sgd"] = "svc"
    """svc: RBF SVC with Platt probabilities; sgd: logistic regression by SGD. Both standardise first."""
    pretrained: bool = True
    """Load pretrained weights (False: a seeded random initialisation)."""
    seed: int = 0
    """Seeds the probe."""
    device: Literal["cpu", "cuda", "mps"] | None = None
    """torch device for feature extraction (default cuda if available, else cpu; as `biobench run`)."""
    batch_size: int = 256
    """Images per forward pass (as `biobench run`)."""
    n_workers: int = dataclasses.field(default_factory=default_workers)
    """Image-decoding worker processes (as `biobench run`: up to 8)."""
    cache_dir: OptionalPath = None
    """Feature cache (default $BIOBENCH_CACHE, else ~/.cache/biobench)."""
    overwrite: bool = False
    """Replace the files of an existing submission folder at --out (otherwise that is an error)."""


@dataclasses.dataclass(frozen=True)
class Bundle:
    """Lay out a CodaBench competition bundle built from biobench's ingestion and scoring programs."""

    out: Path
    """Folder to write (zip its contents to upload)."""
    val_ref: OptionalPath = None
    """Validation reference CSV (development phase)."""
    test_ref: OptionalPath = None
    """Test reference CSV (final phase)."""
    val_images: OptionalPath = None
    """Folder of validation images to include."""
    test_images: OptionalPath = None
    """Folder of test images to include."""
    baseline: tuple[Path, ...] = ()
    """Submission folders to include under baselines/."""
    title: str = "Butterfly Hybrid Detection"
    """Competition title."""
    docker_image: str = "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime"
    """Image CodaBench runs everything in; it needs Pillow and numpy, and biobench for biobench baselines."""


def challenge(
    cmd: Annotated[Score, tyro.conf.subcommand("score")]
    | Annotated[Ingest, tyro.conf.subcommand("ingest")]
    | Annotated[Baseline, tyro.conf.subcommand("baseline")]
    | Annotated[Bundle, tyro.conf.subcommand("bundle")],
) -> int:
    """The HDR butterfly hybrid-detection challenge: score, ingest, baseline, bundle."""
    if isinstance(cmd, Score):
        return _score(cmd)
    if isinstance(cmd, Ingest):
        from biobench.challenge import ingestion

        if cmd.install_requirements:
            ingestion.install_requirements(cmd.submission)
        result = ingestion.ingest(cmd.submission, cmd.images, cmd.out)
        print(
            f"Wrote {result.predictions}: {result.n_scored} images scored, {len(result.skipped)} unreadable"
            f"{' (' + ', '.join(result.skipped[:5]) + ')' if result.skipped else ''}, "
            f"{len(result.ignored)} non-image files ignored; load {result.seconds_load:.1f}s, predict {result.seconds_predict:.1f}s."
        )
        return 0
    if isinstance(cmd, Baseline):
        from biobench.challenge import baseline

        res = baseline.train_baseline(
            cmd.backbone,
            cmd.train_csv,
            cmd.images,
            cmd.out,
            classifier=cmd.classifier,
            pretrained=cmd.pretrained,
            seed=cmd.seed,
            device=Settings(device=cmd.device).resolved_device(),
            batch_size=cmd.batch_size,
            n_workers=cmd.n_workers,
            cache_dir=cmd.cache_dir,
            overwrite=cmd.overwrite,
        )
        print(
            f"Wrote a submission to {res.out} ({', '.join(baseline.SUBMISSION_FILES)}): {cmd.classifier} on "
            f"{cmd.backbone} features of {res.n_train} images ({res.n_hybrid} hybrids; {res.n_embedded} embedded now, "
            f"the rest cached). Zip the folder's contents to submit."
        )
        return 0
    from biobench.challenge import bundle

    out = bundle.build_bundle(
        cmd.out,
        val_ref=cmd.val_ref,
        test_ref=cmd.test_ref,
        val_images=cmd.val_images,
        test_images=cmd.test_images,
        baselines=cmd.baseline,
        title=cmd.title,
        docker_image=cmd.docker_image,
    )
    print(f"Wrote a CodaBench bundle to {out}; zip its contents (cd {out} && zip -r ../bundle.zip .) to upload.")
    return 0


def _score(cmd: Score) -> int:
    import json

    from biobench.challenge import scoring

    board, detailed = scoring.score_files(cmd.ref, cmd.pred)
    detailed_path = cmd.detailed or cmd.out.with_name(f"{cmd.out.stem}_detailed{cmd.out.suffix or '.json'}")
    scoring.write_json(cmd.out, board)
    scoring.write_json(detailed_path, detailed)
    print(json.dumps(board, indent=2))
    print(f"Wrote {cmd.out} and {detailed_path}", file=sys.stderr)
    return 0
