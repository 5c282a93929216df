"""Plankton: phytoplankton species from grayscale imaging-flow-cytometry images, ridge on frozen features.

Kraft, Velhonoja, Eerola et al. "Towards operational phytoplankton recognition with automated
high-throughput imaging, near-real-time data processing, and convolutional neural networks."
Frontiers in Marine Science 9, 2022. https://doi.org/10.3389/fmars.2022.867695
Training images: SYKE-plankton_IFCB_2022 (https://b2share.eudat.eu/records/abf913e5a6ad47e6baa273ae0ed6617a);
test images: SYKE-plankton_IFCB_Utö_2021 (https://b2share.eudat.eu/records/7c273b6f409c47e98a868d6517be3ae3),
a separate, later collection (Utö station, 2021), so train and test differ in time. Cite all three.

Data layout (the two archives' class folders, renamed by `biobench download plankton`):

```
DIR/train/<class>/*.png     SYKE-plankton_IFCB_2022 (unpacks as labeled_20201020/)
DIR/val/<class>/*.png       SYKE-plankton_IFCB_Utö_2021 (unpacks as phytoplankton_Utö_2021_labeled/)
```

The images are single-channel (grayscale) and are loaded as RGB. Other files in the folders
are ignored. Class indices come from the union of both splits' class names, sorted, so a class
found only in `val` keeps one index (the probe never predicts it: those images count as wrong).

Protocol (as the original biobench ran it): standardise the features, then a ridge classifier
with balanced class weights, alpha chosen by 5-fold CV accuracy over 2 ** arange(-15, 11)
(a wider grid than ImageNet's); fit on all of `train`, score on `val`. `n_train >= 0` trains on
a seeded class-balanced sample. Metric: accuracy on `val`, with a bootstrap 95% interval.

Zero-shot (the text route, `method = "zero-shot"` models): the `val` images against the class
folder names read as names (`Chaetoceros_sp` -> "Chaetoceros sp") in OpenAI's 80 templates.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from biobench import fixtures
from biobench.download import Resource
from biobench.errors import DataError
from biobench.examples import Examples
from biobench.layouts.folders import read_class_folders
from biobench.metrics import ACCURACY
from biobench.probes import Ridge
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

NAME = "plankton"
VERSION = 1
CITATION = """@article{kraft2022towards,
  title={Towards operational phytoplankton recognition with automated high-throughput imaging, near-real-time data processing, and convolutional neural networks},
  author={Kraft, Kaisa and Velhonoja, Otso and Eerola, Tuomas and Suikkanen, Sanna and Tamminen, Timo and Haraguchi, Lumi and Yl{\\"o}stalo, Pasi and Kielosto, Sami and Johansson, Milla and Lensu, Lasse and K{\\"a}lvi{\\"a}inen, Heikki and Haario, Heikki and Sepp{\\"a}l{\\"a}, Jukka},
  journal={Frontiers in Marine Science},
  volume={9},
  year={2022},
  doi={10.3389/fmars.2022.867695}
}
@misc{kraft2022syke,
  title={{SYKE-plankton\\_IFCB\\_2022}},
  author={Kraft, Kaisa and Velhonoja, Otso and Sepp{\\"a}l{\\"a}, Jukka and H{\\"a}llfors, Heidi and Suikkanen, Sanna and Yl{\\"o}stalo, Pasi and Angl{\\`e}s, S{\\'i}lvia and Kielosto, Sami and Kuosa, Harri and Lehtinen, Sirpa and Oja, Johanna and Tamminen, Timo},
  publisher={EUDAT B2SHARE},
  year={2022},
  doi={10.23728/B2SHARE.ABF913E5A6AD47E6BAA273AE0ED6617A}
}
@misc{kraft2021syke,
  title={{SYKE-plankton\\_IFCB\\_Ut{\\"o}\\_2021}},
  author={Kraft, Kaisa and Haraguchi, Lumi and Velhonoja, Otso and Sepp{\\"a}l{\\"a}, Jukka},
  publisher={EUDAT B2SHARE},
  year={2022},
  doi={10.23728/B2SHARE.7C273B6F409C47E98A868D6517BE3AE3}
}"""

SPLITS = {"train": "train", "test": "val"}
"""Split -> folder under DIR."""
UNPACKED = {"train": "labeled_20201020", "val": "phytoplankton_Ut*_2021_labeled"}
"""Folder -> what its archive unpacks as (a glob: the 'ö' may be stored composed or decomposed)."""

_B2SHARE = "https://b2share.eudat.eu/records"
# The original biobench's current addresses (the seed's /api/files/ ones are older); no md5 is published. Members
# are checked after `place_download` has renamed the unpacked folders.
RESOURCES = (
    Resource(f"{_B2SHARE}/xvnrp-7ga56/files/phytoplankton_labeled.zip", "train.zip", None, ("train/*/*.png",)),
    Resource(f"{_B2SHARE}/w7y96-6jd66/files/phytoplankton_Ut%C3%B6_2021_labeled.zip", "val.zip", None, ("val/*/*.png",)),
)
"""Training and test images, one zip each."""


@dataclasses.dataclass(frozen=True)
class Options:
    """Plankton options, from the config file's `[plankton]` table."""

    data: Path
    """Directory holding train/<class>/*.png and val/<class>/*.png."""


def read(options: Options) -> Examples:
    """One example per image: `train` trains, `val` tests; one class index over both splits."""
    return read_class_folders(NAME, options.data, SPLITS)


def place_download(root: Path) -> None:
    """Rename the unpacked archive folders to train/ and val/ (a no-op when they are already there)."""
    root = Path(root)
    for folder, pattern in UNPACKED.items():
        found = sorted(p for p in root.glob(pattern) if p.is_dir())
        if len(found) > 1:
            raise DataError(f"{NAME}: several folders in {root} match {pattern} ({', '.join(p.name for p in found)}); keep one.")
        if found:
            if (root / folder).exists():
                shutil.rmtree(root / folder)  # a fresh download replaces an old copy, as the original script did
            found[0].rename(root / folder)
        elif not (root / folder).is_dir():
            raise DataError(f"{NAME}: neither {root / folder} nor {root / pattern} is there after the download; rerun it.")


############
# Fixture  #
############

FIXTURE_CLASSES = ("Aphanizomenon_flos-aquae", "Chaetoceros_sp", "Dinophysis_acuminata", "Oocystis_sp", "Pauliella_taeniata",
                   "Skeletonema_marinoi")  # fmt: skip
"""Classes with images in both splits."""
VAL_ONLY = "Heterocapsa_triquetra"
"""A class with test images only (sorts mid-list, so per-split class indices would disagree)."""


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
    """Write grayscale ("L") PNGs in the real layout: 6 classes with 10..24 training images (imbalanced,
    as the real data) and 8 test images each, plus a class with 4 test images only.

    Each class has its own brightness and stripe texture. With `shuffle_labels`, the images'
    class folders are permuted within each split after drawing, so folders carry no signal.
    """
    rng, root = np.random.default_rng(seed), Path(root)
    items: list[tuple[str, int]] = []  # (folder, class index into classes)
    classes = (*FIXTURE_CLASSES, VAL_ONLY)
    for c in range(len(FIXTURE_CLASSES)):
        items += [("train", c)] * (10 + 3 * c) + [("val", c)] * 8
    items += [("val", len(FIXTURE_CLASSES))] * 4
    drawn = [fixtures.draw(rng, 700, c, strength=0.7).convert("L") for _, c in items]
    folders, labels = np.array([f for f, _ in items]), np.array([c for _, c in items])
    if shuffle_labels:
        for f in SPLITS.values():
            rows = np.flatnonzero(folders == f)
            labels[rows] = labels[rng.permutation(rows)]
    for k, (img, folder, c) in enumerate(zip(drawn, folders, labels)):
        # IFCB's own file names: sample time, instrument, region of interest.
        path = root / folder / classes[c] / f"D2021{1 + k % 12:02d}{1 + k % 28:02d}T{k % 24:02d}0000_IFCB114_{k:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, format="PNG")


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES, download=place_download,
                              probe=Ridge(class_weight="balanced", log2_alpha=(-15, 11)), metric=ACCURACY,
                              routes=("probe", "text")))  # fmt: skip
