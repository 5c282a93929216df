"""Herbarium19: name the melastome species (683, family Melastomataceae) of a pressed herbarium specimen.

Tan, Liu, Ambrose, Tulig and Belongie. "The Herbarium Challenge 2019 Dataset." arXiv:1906.05372
(FGVC6 at CVPR 2019; specimens of the New York Botanical Garden). https://github.com/visipedia/herbarium_comp

Data layout (the challenge's archives, unpacked into DIR by `biobench download herbarium19`):

```
DIR/train/<category>/<id>.jpg        34,225 images; <category> is the category id 0..682
DIR/validation/<category>/<id>.jpg   2,679 images
```

Image ids repeat across categories (`train/1/00000.jpg` and `train/2/00000.jpg`), so an
example's id is `FOLDER/CATEGORY/FILE`. The unlabelled `test/` archive (11 GB) is not
used or downloaded; other files in DIR or a split folder are ignored. Class indices come
from the union of both splits' category folders (a category found only in `validation`
is never predicted and counts as wrong). A missing split folder, a split with no
category folders, and a category folder with no image are `DataError`s naming the folder.

Protocol (the original biobench's): a linear probe (LayerNorm, then a linear soft-max
layer) trained on `train` by AdamW (lr 3e-4 with cosine decay to 3e-6, weight decay 0.01
on the weights, batch 2048, 10,000 steps), scored on `validation`. `n_train >= 0` trains
on a seeded class-balanced sample. Metric: macro-F1 over the validation categories, with
a bootstrap 95% interval resampled within category.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from biobench import fixtures
from biobench.download import Resource
from biobench.examples import Examples
from biobench.layouts.folders import read_class_folders
from biobench.metrics import MACRO_F1
from biobench.probes import Linear
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

NAME = "herbarium19"
VERSION = 1
CITATION = """@article{tan2019herbarium,
  title={The Herbarium Challenge 2019 Dataset},
  author={Tan, Kiat Chuan and Liu, Yulong and Ambrose, Barbara and Tulig, Melissa and Belongie, Serge},
  journal={arXiv preprint arXiv:1906.05372},
  year={2019}
}"""

SPLITS = {"train": "train", "test": "validation"}
"""Split -> folder under DIR."""

_GCS = "https://storage.googleapis.com/nybg/herbarium-2019-fgvc6"
RESOURCES = (
    Resource(f"{_GCS}/train.tar.gz", "train.tar.gz", "53c6b9ee2f831f5101dbe00958091dc8", ("train/*/*.jpg",)),
    Resource(f"{_GCS}/validation.tar.gz", "validation.tar.gz", "2f854d580949e54f114993a74adc3d4b", ("validation/*/*.jpg",)),
)
"""The full-resolution training (38 GB) and validation (3 GB) archives, with the challenge's md5 sums."""


@dataclasses.dataclass(frozen=True)
class Options:
    """Herbarium19 options, from the config file's `[herbarium19]` table."""

    data: Path
    """Directory holding train/<category>/*.jpg and validation/<category>/*.jpg."""
    steps: int = 10_000
    """Linear-probe training steps."""


def read(options: Options) -> Examples:
    """One example per image: `train` trains, `validation` tests; one class index over both splits."""
    return read_class_folders(NAME, options.data, SPLITS)


def probe_for(options: Options) -> Linear:
    """The linear probe with the configured number of steps."""
    return Linear(steps=options.steps)


############
# Fixture  #
############

FIXTURE_CATEGORIES = ("0", "1", "2", "10", "11", "100")
"""Category folders, which sort as strings ("10" before "2"), as the real ones do."""


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
    """Write JPEGs in the real layout: 6 categories with 8..13 training and 4 validation images each,
    file names restarting at 00000.jpg in every category folder as in the real archives.

    Each category has its own tint and stripes. With `shuffle_labels`, the images' category
    folders are permuted within each split after drawing, so folders carry no signal."""
    rng, root = np.random.default_rng(seed), Path(root)
    items = [(split, c) for c in range(len(FIXTURE_CATEGORIES)) for split, n in (("train", 8 + c), ("validation", 4)) for _ in range(n)]
    drawn = [fixtures.draw(rng, 1900, c, strength=0.85) for _, c in items]
    folders, labels = np.array([f for f, _ in items]), np.array([c for _, c in items])
    if shuffle_labels:
        for f in SPLITS.values():
            rows = np.flatnonzero(folders == f)
            labels[rows] = labels[rng.permutation(rows)]
    counts: dict[tuple[str, int], int] = {}
    for img, folder, c in zip(drawn, folders, labels):
        k = counts[folder, c] = counts.get((folder, c), -1) + 1
        fixtures.save_jpeg(img, root / folder / FIXTURE_CATEGORIES[c] / f"{k:05d}.jpg")


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES, probe=probe_for,
                              metric=MACRO_F1))  # fmt: skip
