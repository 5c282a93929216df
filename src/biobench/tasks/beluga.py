"""Beluga: re-identify individual beluga whales by the nearest other photo of the same whale.

Data: Beluga ID 2022 on LILA BC (https://lila.science/datasets/beluga-id-2022/), drone
photos of beluga whales (*Delphinapterus leucas*), cropped top-down to one whale each,
with the individual's id; Wild Me's COCO export (5,902 images of 788 individuals).

Data layout (the archive's own, unpacked into DIR):

```
DIR/beluga.coco/annotations/instances_train2022.json   COCO: images (id, file_name), annotations
                                                        (id, image_id, bbox, name = the individual), categories
DIR/beluga.coco/images/train2022/<file_name>
```

Protocol (biobench's): there is no training split. Every annotation is one example (the
whole image: the photos are already crops, so the bbox is not applied), embedded once;
each is a query against all the others (leave-one-out 1-NN, Euclidean distance on the raw
features as the original's scikit-learn `NearestNeighbors` default) and scores 1 when its
nearest other image shows the same individual. Individuals photographed once are kept
(as the original did): they can never be matched and score 0; their count is logged.
Metric: top-1, with a bootstrap interval that resamples whole individuals (an
individual's photos are not independent); `n_train` does not apply.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from biobench import fixtures
from biobench.examples import Examples
from biobench.layouts.coco import WildMeExport
from biobench.metrics import TOP1
from biobench.probes import LeaveOneOutKnn
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

NAME = "beluga"
VERSION = 1
CITATION = """@article{algasov2024understanding,
  title={Understanding the Impact of Training Set Size on Animal Re-identification},
  author={Algasov, Aleksandr and Nepovinnykh, Ekaterina and Eerola, Tuomas and K{\\"a}lvi{\\"a}inen, Heikki and Stewart, Charles V and Otarashvili, Lasha and Holmberg, Jason A},
  journal={arXiv preprint arXiv:2405.15976},
  year={2024}
}
@inproceedings{cermak2024wildlifedatasets,
  title={WildlifeDatasets: An open-source toolkit for animal re-identification},
  author={{\\v{C}}erm{\\'a}k, Vojt{\\v{e}}ch and Picek, Lukas and Adam, Luk{\\'a}{\\v{s}} and Papafitsoros, Kostas},
  booktitle={Proceedings of the IEEE/CVF Winter Conference on Applications of Computer Vision},
  pages={5953--5963},
  year={2024}
}"""

EXPORT = WildMeExport("beluga")
JSON, IMAGES_DIR = EXPORT.json, EXPORT.images_dir


@dataclasses.dataclass(frozen=True)
class Options:
    """Beluga options, from the config file's `[beluga]` table."""

    data: Path
    """The directory holding beluga.coco/ (annotations/ and images/)."""
    distance: Literal["euclidean", "cosine"] = "euclidean"
    """Nearest-neighbour distance on the features (the original: Euclidean on raw features)."""


def read(options: Options) -> Examples:
    """One test example per annotation: label = the individual's index, group = the individual."""
    return EXPORT.read(NAME, options.data, crop=False)


def probe_for(options: Options) -> LeaveOneOutKnn:
    """Leave-one-out 1-NN with the chosen distance."""
    return LeaveOneOutKnn(k=1, metric=options.distance)


############
# Fixture  #
############


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False, n_individuals: int = 40, n_singletons: int = 4) -> None:
    """Write a Beluga-format COCO set: `n_individuals` whales with 3-6 photos each (each whale its own
    colour/stripe style) plus `n_singletons` whales photographed once; each photo is the whole crop.

    With `shuffle_labels`, individual names are permuted among the annotations after the
    images are drawn, so no photo carries its whale's signal.
    """
    fixtures.reid_coco(Path(root), JSON, IMAGES_DIR, seed=seed, shuffle_labels=shuffle_labels, group=7, category="beluga_whale",
                       dataset="Beluga ID 2022", n_individuals=n_individuals, n_singletons=n_singletons, viewpoints=("up",))  # fmt: skip


RESOURCES = (EXPORT.resource,)  # one archive, ~590 MB


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES, probe=probe_for,
                              metric=TOP1, uses_n_train=False, kind="re-identification"))  # fmt: skip
