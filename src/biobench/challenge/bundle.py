"""A CodaBench competition bundle for the HDR hybrid-detection challenge, built from biobench's own programs.

Layout (zip the folder's contents to upload; https://github.com/codalab/codabench/wiki):

```
OUT/competition.yaml                 version 2 bundle: pages, tasks, phases, leaderboard columns
OUT/pages/*.md                       overview, data, evaluation, starting kit, terms
OUT/ingestion_program/ingestion.py   biobench.challenge.ingestion, unchanged (stdlib + Pillow)
OUT/ingestion_program/metadata.yaml  the command CodaBench runs
OUT/scoring_program/score.py         biobench.challenge.scoring, unchanged (stdlib + numpy)
OUT/scoring_program/metadata.yaml
OUT/reference_data/{val,test}/       the reference CSVs (when given)
OUT/input_data/{val,test}/           the images, flat (when given; else a README saying what goes there)
OUT/baselines/<name>/                ready-to-zip submission folders (when given)
OUT/docker/Dockerfile                an image with what the programs and biobench baselines need
```

As in the original challenge (https://github.com/Imageomics/HDR-anomaly-challenge) there
is one task per phase scoring Species A and mimic together; the leaderboard columns are
the scoring program's keys (`scoring.LEADERBOARD_KEYS`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from biobench.challenge import ingestion, scoring
from biobench.errors import DataError

DEFAULT_DOCKER_IMAGE = "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime"

COLUMN_TITLES = {
    "challenge_score": "Challenge Score (harmonic mean of recalls)",
    "A_score_major_recall": "Signal Hybrid Recall (A major)",
    "A_score_minor_recall": "Non-Signal Hybrid Recall (A minor)",
    "mimic_recall": "Mimic Hybrid Recall",
    "A_PRC_AUC": "PRC AUC Species A",
    "A_PRC_AUC_major": "PRC AUC Species A Signal Hybrids",
    "A_PRC_AUC_minor": "PRC AUC Species A Non-Signal Hybrids",
    "mimic_PRC_AUC": "PRC AUC Mimic Hybrids",
}

INGESTION_COMMAND = "python3 /app/program/ingestion.py /app/input_data/ /app/output/ /app/program /app/ingested_program"
SCORING_COMMAND = "python3 /app/program/score.py /app/input/ /app/output/"

logger = logging.getLogger(__name__)


def competition_yaml(*, title: str, docker_image: str) -> str:
    """The bundle's competition.yaml (written by hand: a fixed, small document)."""
    columns = "\n".join(
        f"  - title: {COLUMN_TITLES[key]}\n    key: {key}\n    index: {i}\n    sorting: desc"
        for i, key in enumerate(scoring.LEADERBOARD_KEYS)
    )
    tasks = []
    for i, split in enumerate(("val", "test")):
        phase = "Development" if split == "val" else "Final"
        tasks.append(
            f"- index: {i}\n  name: {phase} Task\n"
            f"  description: Hybrid detection on the {split} images (Species A and mimic).\n"
            f"  is_public: false\n  input_data: input_data/{split}\n  reference_data: reference_data/{split}\n"
            f"  scoring_program: scoring_program\n  ingestion_program: ingestion_program"
        )
    return f"""# CodaBench competition bundle written by `biobench challenge bundle`.
# Structure: https://github.com/codalab/codabench/wiki/Yaml-Structure
version: 2
title: {title}
description: Detect hybrids among two mimetic butterfly species (Heliconius erato and H. melpomene) and their subspecies.
registration_auto_approve: True
docker_image: '{docker_image}'
enable_detailed_results: False

terms: pages/terms.md
pages:
  - title: Overview
    file: pages/overview.md
  - title: Data
    file: pages/data.md
  - title: Evaluation
    file: pages/evaluation.md
  - title: Starting Kit
    file: pages/starting_kit.md
  - title: Terms
    file: pages/terms.md

tasks:
{chr(10).join(tasks)}
solutions: []

phases:
- index: 0
  name: Development
  description: Submit code; it is run on the validation images and scored against their reference.
  start: 1-1-2025
  max_submissions_per_day: 5
  tasks:
  - 0
  solutions: []
- index: 1
  name: Final
  description: The chosen submission is run on the test images.
  start: 12-31-2025
  max_submissions_per_day: 0
  tasks:
  - 1
  solutions: []

leaderboards:
- index: 0
  title: Hybrid detection
  key: hybrid-detection
  submission_rule: "Add_And_Delete"
  columns:
{columns}
"""


PAGES = {
    "overview.md": """# Butterfly hybrid detection

Heliconius erato (Species A) and H. melpomene (its mimic) are co-mimics: their
subspecies share wing patterns across South America, and where subspecies meet they
hybridise. The training data contains Species A images, including hybrids of its two
best-represented subspecies (the signal hybrids). Submissions must also find hybrids of
other Species A subspecies (non-signal, unseen in training) and hybrids of the mimic
species.
""",
    "data.md": """# Data

Training metadata: `butterfly_anomaly_train.csv` (columns `CAMID, file_url, hybrid_stat
(hybrid | non-hybrid), split, zenodo_link, md5, subspecies, parent_subspecies_1,
parent_subspecies_2, filename`); images from Zenodo. `biobench download hybrids --dir D`
fetches the CSVs and images.

Evaluation images are given to your model one at a time; their reference lists
`filename, hybrid_stat (0/1), ssp_indicator (major | minor | mimic)`.
""",
    "evaluation.md": """# Evaluation

Your model gives every image a score, higher = more likely a hybrid. For Species A
(major + minor) and for the mimic species separately, the threshold is the smallest
score at which at least 95% of that group's non-hybrids score at or below it; a hybrid is
detected when its score is strictly above the threshold.

| column | meaning |
|---|---|
| `challenge_score` | harmonic mean of the three recalls below (the ranking) |
| `A_score_major_recall` | signal hybrids detected at Species A's threshold |
| `A_score_minor_recall` | non-signal hybrids detected at Species A's threshold |
| `mimic_recall` | mimic hybrids detected at the mimic threshold |
| `A_PRC_AUC`, `A_PRC_AUC_major`, `A_PRC_AUC_minor`, `mimic_PRC_AUC` | average precision |

Ties are never split by the threshold. Every reference image needs a prediction;
predictions for other files are ignored.
""",
    "starting_kit.md": """# Starting kit

Upload a zip of a folder whose `model.py` defines

```python
class Model:
    def load(self): ...                                   # read your weights from this folder
    def predict(self, image: "PIL.Image.Image") -> float: ...  # higher = more likely a hybrid
```

Images are passed as RGB. A `requirements.txt` next to `model.py` is pip-installed first.
`biobench challenge baseline --backbone ORG:CKPT --train-csv CSV --images DIR --out DIR`
writes such a folder from any frozen backbone plus a probe; test it locally with
`biobench challenge ingest` and `biobench challenge score`.
""",
    "terms.md": """# Terms

Images are used under the licences of their Zenodo records. Submissions must not use the
evaluation images or their labels for training.
""",
}

DOCKERFILE = """# What the programs and biobench baselines need: Pillow + numpy (ingestion, scoring),
# biobench with torch, open_clip_torch, timm and scikit-learn (baseline model.py).
FROM {base}
COPY biobench-*.whl /tmp/
RUN pip install --no-cache-dir /tmp/biobench-*.whl && rm /tmp/biobench-*.whl
# Build: put a biobench wheel (`pip wheel --no-deps -w docker/ .` in the biobench repo) next to
# this file, then `docker build -t IMAGE docker/` and pass --docker-image IMAGE to the bundle.
"""


def build_bundle(
    out: Path,
    *,
    val_ref: Path | None = None,
    test_ref: Path | None = None,
    val_images: Path | None = None,
    test_images: Path | None = None,
    baselines: tuple[Path, ...] = (),
    title: str = "Butterfly Hybrid Detection",
    docker_image: str = DEFAULT_DOCKER_IMAGE,
) -> Path:
    """Write the bundle folder `out`; returns it. Reference CSVs are validated before anything is written."""
    out = Path(out)
    for ref in (val_ref, test_ref):
        if ref is not None:
            scoring.read_reference(ref)  # fail now, not when CodaBench first scores
    for folder in (val_images, test_images, *baselines):
        if folder is not None and not Path(folder).is_dir():
            raise DataError(f"Folder not found: {folder}.")
    for b in baselines:
        if not (Path(b) / "model.py").is_file():
            raise DataError(f"Baseline folder {b} has no model.py; write one with `biobench challenge baseline`.")

    out.mkdir(parents=True, exist_ok=True)
    (out / "competition.yaml").write_text(competition_yaml(title=title, docker_image=docker_image))
    for name, text in PAGES.items():
        _write(out / "pages" / name, text)
    _write(out / "ingestion_program" / "metadata.yaml", f"command: {INGESTION_COMMAND}\n")
    shutil.copyfile(ingestion.__file__, out / "ingestion_program" / "ingestion.py")
    _write(out / "scoring_program" / "metadata.yaml", f"command: {SCORING_COMMAND}\n")
    shutil.copyfile(scoring.__file__, out / "scoring_program" / "score.py")
    _write(out / "docker" / "Dockerfile", DOCKERFILE.format(base=docker_image))

    for split, ref, images in (("val", val_ref, val_images), ("test", test_ref, test_images)):
        ref_dir, img_dir = out / "reference_data" / split, out / "input_data" / split
        ref_dir.mkdir(parents=True, exist_ok=True)
        img_dir.mkdir(parents=True, exist_ok=True)
        if ref is not None:
            shutil.copyfile(ref, ref_dir / f"ref_{split}.csv")
        else:
            _write(ref_dir / "README.md", f"Put the {split} reference CSV (filename, hybrid_stat, ssp_indicator) here.\n")
        if images is not None:
            files, _ = ingestion.list_images(Path(images))
            for f in files:
                shutil.copyfile(f, img_dir / f.name)
        else:
            _write(img_dir / "README.md", f"Put the {split} images here, flat (no sub-folders).\n")
            if ref is not None:
                logger.warning(
                    "The bundle has a %s reference but no %s images: input_data/%s is empty until you copy them "
                    "there (or pass --%s-images DIR).", split, split, split, split,
                )  # fmt: skip
    for b in baselines:
        shutil.copytree(b, out / "baselines" / Path(b).name, dirs_exist_ok=True)
    return out


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
