"""Birds525: 525 bird species from one photo each (1-shot SimpleShot, repeated over 100 training draws).

Data: "BIRDS 525 SPECIES - IMAGE CLASSIFICATION" by Gerald Piosenka on Kaggle
(https://www.kaggle.com/datasets/gpiosenka/100-bird-species): 224 x 224 crops of one bird
each, 84,635 training images and 5 validation and 5 test images per species.

Data layout (the Kaggle archive's own, unzipped into DIR):

```
DIR/train/<SPECIES>/*.jpg    e.g. train/ABBOTTS BABBLER/001.jpg
DIR/valid/<SPECIES>/*.jpg    the test set of this task (`test_split = "valid"`, as BioCLIP and biobench)
DIR/test/<SPECIES>/*.jpg     the alternative test set (`test_split = "test"`)
DIR/birds.csv                class id, filepaths, labels, data set, scientific name (not read)
```

Protocol (BioCLIP's, as the original biobench ran it): SimpleShot (centre on the training
mean, L2-normalise, nearest class centroid) fitted on `shots` (1) training images per
species, drawn at random; repeated for `n_repeats` (100) draws, each from its own
generator (experiment seed, draw index), each scored on the same test images. Metric:
accuracy over all (draw, test image) pairs, i.e. the mean of the draws' accuracies.
Interval: both the draws and the test images are samples, so the bootstrap resamples
both, crossed (`stats.crossed_mean_ci`, Owen's pigeonhole bootstrap): a replicate draws
100 of the draws and 2,625 of the test images with replacement and averages their cells.
It is an interval for the mean accuracy over draws, which narrows as draws are added
(unlike one draw's spread); where draws disagree more than the test images' noise, it
is wider than a single draw's. Each draw's accuracy is a sub-score (`repeat`). `n_train`
does not apply (`shots` sets the training set).

Bad inputs: a missing split folder, a split folder with no class folders, or a class
folder with no image is a `DataError` naming it; a species with test images but no
training folder is kept (never predicted, so always wrong) and its count is logged; an
unreadable image is a `DataError` when it is embedded.

Zero-shot (the text route, `method = "zero-shot"` models): the test images against the species
folder names in lower case ("bald eagle") in OpenAI's 80 templates; no training draws.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

import numpy as np

from biobench import fixtures
from biobench.download import manual_steps
from biobench.examples import Examples
from biobench.layouts.folders import read_class_folders
from biobench.metrics import ACCURACY
from biobench.probes import SimpleShot
from biobench.sampling import Repeats
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

NAME = "birds525"
VERSION = 1
CITATION = """@misc{piosenka2023birds,
  title={{BIRDS} 525 {SPECIES} - {IMAGE} {CLASSIFICATION}},
  author={Piosenka, Gerald},
  howpublished={Kaggle, \\url{https://www.kaggle.com/datasets/gpiosenka/100-bird-species}},
  year={2023}
}
@inproceedings{stevens2024bioclip,
  title={{BioCLIP}: A Vision Foundation Model for the Tree of Life},
  author={Stevens, Samuel and Wu, Jiaman and Thompson, Matthew J and Campolongo, Elizabeth G and Song, Chan Hee and Carlyn, David Edward and Dong, Li and Dahdul, Wasila M and Stewart, Charles and Berger-Wolf, Tanya and Chao, Wei-Lun and Su, Yu},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  pages={19412--19424},
  year={2024}
}"""


@dataclasses.dataclass(frozen=True)
class Options:
    """Birds525 options, from the config file's `[birds525]` table."""

    data: Path
    """Directory holding train/, valid/ and test/ (each <SPECIES>/*.jpg)."""
    n_repeats: int = 100
    """Training draws, each fitted and scored on the whole test split."""
    shots: int = 1
    """Training images per species in each draw."""
    test_split: Literal["valid", "test"] = "valid"
    """Folder scored as the test set."""


def read(options: Options) -> Examples:
    """One example per image: train/ trains, `test_split` tests; one species index over both."""
    examples = read_class_folders(NAME, options.data, {"train": "train", "test": options.test_split})
    t = examples.table
    untrained = set(t.filter(t["split"] == "test")["label"]) - set(t.filter(t["split"] == "train")["label"])
    if untrained:
        shown = ", ".join(examples.names("")[c] for c in sorted(untrained)[:5])
        logger.warning("%s: %d species have test images but no training folder (e.g. %s); kept, always wrong.", NAME, len(untrained), shown)
    return examples


def repeats_for(options: Options) -> Repeats:
    return Repeats(options.n_repeats, options.shots)


def download(root: Path) -> None:
    """Kaggle needs an account: when train/ and valid/ are not in place, say how to get them."""
    if (root / "train").is_dir() and (root / "valid").is_dir():
        return
    raise manual_steps(
        NAME, root, "the dataset is on Kaggle, which needs an account and an API token",
        ["Sign in at https://www.kaggle.com, open Settings > API > Create New Token, and save the file as "
         "~/.kaggle/kaggle.json (chmod 600).",
         "pip install kaggle",
         "kaggle datasets download -d gpiosenka/100-bird-species -p {dir}",
         "cd {dir} && unzip 100-bird-species.zip && rm 100-bird-species.zip"],
        "  {dir}/train/<SPECIES>/*.jpg\n  {dir}/valid/<SPECIES>/*.jpg\n  {dir}/test/<SPECIES>/*.jpg\n  {dir}/birds.csv",
    )  # fmt: skip


FIXTURE_SPECIES = ("ABBOTTS BABBLER", "BALD EAGLE", "CAPE MAY WARBLER", "DARK EYED JUNCO", "EMPEROR PENGUIN",
                   "FIRE TAILLED MYZORNIS")  # fmt: skip
"""Real class folder names (upper case, spaces; the dataset's own spellings)."""


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
    """Write the Kaggle layout: 6 species with 4..9 training images and 3 valid and 3 test images each, and birds.csv.

    Each species has its own tint and stripes. With `shuffle_labels`, the images' species
    folders are permuted within each split after drawing.
    """
    rng, root = np.random.default_rng(seed), Path(root)
    items = [
        (split, c) for c in range(len(FIXTURE_SPECIES)) for split, n in (("train", 4 + c), ("valid", 3), ("test", 3)) for _ in range(n)
    ]
    drawn = [fixtures.draw(rng, 525, c, strength=0.7) for _, c in items]
    splits, labels = np.array([s for s, _ in items]), np.array([c for _, c in items])
    if shuffle_labels:
        for s in ("train", "valid", "test"):
            rows = np.flatnonzero(splits == s)
            labels[rows] = labels[rng.permutation(rows)]
    lines, counts = ["class id,filepaths,labels,data set,scientific name"], {}
    for img, split, c in zip(drawn, splits, labels):
        k = counts[split, c] = counts.get((split, c), 0) + 1
        rel = f"{split}/{FIXTURE_SPECIES[c]}/{k:03d}.jpg"
        fixtures.save_jpeg(img, root / rel)
        lines.append(f"{float(c)},{rel},{FIXTURE_SPECIES[c]},{split},SPECIES {c}")
    (root / "birds.csv").write_text("\n".join(lines) + "\n")


def text_names(options: Options, examples: Examples) -> dict[str, tuple[str, ...]]:
    """Zero-shot names: the species folders (upper case, "BALD EAGLE") in lower case ("bald eagle")."""
    return {k: tuple(n.lower() for n in v) for k, v in examples.classnames.items()}


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, download=download, probe=SimpleShot(),
                              metric=ACCURACY, uses_n_train=False, repeats=repeats_for, routes=("probe", "text"),
                              text_names=text_names))  # fmt: skip
