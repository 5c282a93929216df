"""Leopard: re-identify individual African leopards by exemplar SVMs on cropped camera-trap photos.

Data: Leopard ID 2022 on LILA BC (https://lila.science/datasets/leopard-id-2022/), camera-trap
photos of African leopards (*Panthera pardus*) from the Botswana Predator Conservation
Program, each leopard boxed and named by individual (Wild Me's COCO export, about 6,800
annotations, left and right flanks).

Data layout (the archive's own, unpacked into DIR):

```
DIR/leopard.coco/annotations/instances_train2022.json   COCO: images (id, file_name), annotations
                                                         (id, image_id, bbox [x, y, w, h], viewpoint, name = the individual)
DIR/leopard.coco/images/train2022/<file_name>
```

Protocol (Karpathy's exemplar SVMs, as the original biobench ran it): every annotation is
one example, its `bbox` cropped from the photo and embedded. For each example, a linear
SVM (LinearSVC, C = 0.1, balanced class weights, on the raw features) separates it, the
only positive, from all the others; the others are ranked by its decision value and the
query scores 1 when the best-ranked OTHER example shows the same individual. All N SVMs
are solved at once by the batched probe (`probes.ExemplarSvm`, tested against
scikit-learn). Metric: top-1, with a bootstrap interval that resamples whole individuals
(one leopard's photos are not independent); `n_train` does not apply. Individuals
photographed once are kept (they can never be matched and score 0; their count is logged).

Bad inputs, each a `DataError` naming the file and the annotation: malformed JSON, a
missing COCO list, an annotation naming an unknown image or category, one without `name`,
a `bbox` that is not [x, y, width, height] with positive size, an image file that is not
on disk. Images without annotations are not examples; an unreadable image is a
`DataError` when it is embedded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from biobench import fixtures
from biobench.examples import Examples
from biobench.layouts.coco import WildMeExport
from biobench.metrics import TOP1
from biobench.probes import ExemplarSvm
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

NAME = "leopard"
VERSION = 1
CITATION = """@misc{lila2022leopard,
  title={Leopard {ID} 2022},
  author={{Botswana Predator Conservation Program} and {Wild Me}},
  howpublished={LILA BC, \\url{https://lila.science/datasets/leopard-id-2022/}},
  year={2022}
}
@inproceedings{malisiewicz2011exemplar,
  title={Ensemble of Exemplar-{SVMs} for Object Detection and Beyond},
  author={Malisiewicz, Tomasz and Gupta, Abhinav and Efros, Alexei A},
  booktitle={Proceedings of the IEEE International Conference on Computer Vision (ICCV)},
  pages={89--96},
  year={2011}
}"""

EXPORT = WildMeExport("leopard")
"""leopard.coco/annotations/instances_train2022.json and leopard.coco/images/train2022/, one archive."""


@dataclasses.dataclass(frozen=True)
class Options:
    """Leopard options, from the config file's `[leopard]` table."""

    data: Path
    """The directory holding leopard.coco/ (annotations/ and images/)."""
    c: float = 0.1
    """Each exemplar SVM's C (LinearSVC's; the original: 0.1)."""


def read(options: Options) -> Examples:
    """One test example per annotation, cropped to its bbox: label = the individual's index, group = the individual."""
    return EXPORT.read(NAME, options.data, crop=True)


def probe_for(options: Options) -> ExemplarSvm:
    """All exemplar SVMs at once, with the chosen C."""
    return ExemplarSvm(c=options.c)


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False, n_individuals: int = 30, n_singletons: int = 3) -> None:
    """Write a Leopard-format COCO set: `n_individuals` leopards with 3-6 photos each plus `n_singletons`
    photographed once, each a 32-pixel patch pasted into a noisy 80 x 64 scene with its bbox; every 5th scene holds
    a second leopard (so only the crops tell them apart). Flanks alternate left and right.

    With `shuffle_labels`, names are permuted among the annotations after drawing.
    """
    fixtures.reid_coco(Path(root), EXPORT.json, EXPORT.images_dir, seed=seed, shuffle_labels=shuffle_labels, group=6800, category="leopard",
                       dataset="Leopard ID 2022", n_individuals=n_individuals, n_singletons=n_singletons,
                       viewpoints=("left", "right"), scene=(80, 64), pair_every=5, animal_size=32)  # fmt: skip


RESOURCES = (EXPORT.resource,)


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES, probe=probe_for,
                              metric=TOP1, uses_n_train=False, kind="re-identification"))  # fmt: skip
