"""iWildCam (WILDS): camera-trap species at unseen camera locations, ridge on frozen features.

Beery, Cole & Gjoka, "The iWildCam 2020 Competition Dataset", arXiv:2004.10340 (2020); as
curated by WILDS: Koh, Sagawa, Marklund et al., "WILDS: A benchmark of in-the-wild distribution
shifts", ICML 2021. Cite both.

Data layout (WILDS' `iwildcam_v2.0/` folder, as `wilds.get_dataset("iwildcam", download=True)`
or `biobench download iwildcam` leaves it; 11 GB):

```
DIR/metadata.csv     one row per image: split, location, y (class index), filename, ...
DIR/train/<filename> every image, whatever its split
DIR/categories.csv   optional: y -> name (class names)
```

Protocol (the original biobench's): WILDS' `train` split trains and its out-of-distribution
`test` split (camera locations never seen in training) tests; rows of the other splits (`val`,
`id_val`, `id_test`) are counted and logged, not used. Standardise, one-vs-rest ridge, alpha by
5-fold CV macro-F1 over 2 ** arange(-15, 5). `n_train >= 0` trains on a seeded class-balanced
sample. Metric: macro-F1 over the classes present in the test split (a class seen only in
training, or only predicted, does not enter the average), its bootstrap resampling within
class; scores are broken down by location.

Bad inputs: a missing metadata.csv or column, an empty or non-integer `y`, an empty filename,
or a listed image missing from train/ is a `DataError` naming the file and line.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import polars as pl

from biobench import fixtures
from biobench.download import Resource
from biobench.examples import Examples, one_per_image
from biobench.images import ImageSet
from biobench.layouts import require_files, tables
from biobench.metrics import MACRO_F1
from biobench.probes import Ridge
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

NAME = "iwildcam"
VERSION = 1
CITATION = """@article{beery2020iwildcam,
  title={The iWildCam 2020 Competition Dataset},
  author={Beery, Sara and Cole, Elijah and Gjoka, Arvi},
  journal={arXiv preprint arXiv:2004.10340},
  year={2020}
}
@inproceedings{koh2021wilds,
  title={{WILDS}: A benchmark of in-the-wild distribution shifts},
  author={Koh, Pang Wei and Sagawa, Shiori and Marklund, Henrik and Xie, Sang Michael and Zhang, Marvin and Balsubramani, Akshay and Hu, Weihua and Yasunaga, Michihiro and Phillips, Richard Lanas and Gao, Irena and others},
  booktitle={International Conference on Machine Learning},
  pages={5637--5664},
  year={2021}
}"""

SPLITS = {"train": "train", "test": "test"}
"""WILDS split -> our split; other WILDS splits are left out."""
COLUMNS = ("split", "location", "y", "filename")
"""metadata.csv columns the task reads."""
RESOURCES = (Resource("https://worksheets.codalab.org/rest/bundles/0x6313da2b204647e79a14b468131fcd64/contents/blob/",
                      "iwildcam_v2.0.tar.gz", None, ("metadata.csv", "train/*.jpg")),)  # fmt: skip
"""WILDS' iwildcam v2.0 bundle (what `wilds` downloads; no md5 is published)."""


@dataclasses.dataclass(frozen=True)
class Options:
    """iWildCam options, from the config file's `[iwildcam]` table."""

    data: Path
    """The iwildcam_v2.0 directory: metadata.csv and train/."""


def read(options: Options) -> Examples:
    """One example per train or test row of metadata.csv; label = WILDS' `y`; class names from categories.csv if present."""
    data = Path(options.data)
    csv = data / "metadata.csv"
    df = tables.read_csv(NAME, data, csv, COLUMNS)
    kept = df.filter(pl.col("split").is_in(list(SPLITS)))
    if kept.height < df.height:
        counts = df.filter(~pl.col("split").is_in(list(SPLITS)))["split"].value_counts(sort=True).rows()
        logger.info("%s: %d of %d rows of %s are in other splits (%s); not used.", NAME, df.height - kept.height, df.height, csv,
                    ", ".join(f"{s}: {n}" for s, n in counts))  # fmt: skip
    tables.require_filled(NAME, kept, csv, ("y", "filename"))
    kept = tables.integers(NAME, kept, csv, ("y",))
    paths = [data / "train" / f for f in kept["filename"]]
    require_files(NAME, paths, [f"line {n} ({f})" for n, f in zip(kept["_line"], kept["filename"])], csv)
    labels = kept["y"].to_numpy()
    images = ImageSet(NAME, kept["filename"].to_list(), paths)
    return one_per_image(images, labels, [SPLITS[s] for s in kept["split"]], columns={"location": kept["location"].to_list()},
                         classnames={"": class_names(data, int(labels.max()) + 1)}, info=("location",))  # fmt: skip


def class_names(data: Path, n: int) -> tuple[str, ...]:
    """Names of classes 0..n-1 from categories.csv (columns y, name); the index itself where it lacks one."""
    names = [str(i) for i in range(n)]
    path = data / "categories.csv"
    if path.is_file():
        cats = tables.integers(NAME, tables.read_csv(NAME, data, path, ("y", "name")), path, ("y",))
        for y, name in zip(cats["y"], cats["name"]):
            if 0 <= y < n and name:
                names[y] = name
    return tuple(names)


############
# Fixture  #
############

FIXTURE_CLASSES = {0: "empty", 36: "tayassu pecari", 72: "dasyprocta punctata", 101: "meleagris ocellata", 146: "cuniculus paca"}
"""Real WILDS class indices and names; 146 appears in training only (it never enters the test macro-F1)."""


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
    """Write metadata.csv, categories.csv and JPEGs in train/: 4 classes x 8 train images at locations 0-2,
    4 x 5 OOD test images at locations 3-4, 6 train images of class 146, and 5 rows of other splits (val, id_test).

    With `shuffle_labels`, `y` is permuted within each split after drawing.
    """
    rng, root = np.random.default_rng(seed), Path(root)
    rows: list[tuple[str, int]] = []
    for c in (0, 36, 72, 101):
        rows += [("train", c)] * 8 + [("test", c)] * 5 + [("val", c), ("id_test", c)][: 1 + c % 2]
    rows += [("train", 146)] * 6
    split = np.array([s for s, _ in rows])
    y = np.array([c for _, c in rows])
    styles = {c: i for i, c in enumerate(FIXTURE_CLASSES)}
    drawn = [fixtures.draw(rng, 2020, styles[int(c)], strength=0.7) for c in y]
    if shuffle_labels:
        for s in set(split):
            idx = np.flatnonzero(split == s)
            y[idx] = y[rng.permutation(idx)]
    lines = [",split,location_remapped,location,sequence,datetime,y,image_id,filename"]
    for i, (img, s, c) in enumerate(zip(drawn, split, y)):
        image_id = fixtures.example_id(rng)
        loc = int(rng.integers(0, 3)) if s in ("train", "id_test") else int(rng.integers(3, 5))
        fixtures.save_jpeg(img, root / "train" / f"{image_id}.jpg")
        lines.append(
            f"{i},{s},{loc},{100 + loc},{fixtures.example_id(rng)},2013-06-0{1 + i % 9} 10:00:00.000,{c},{image_id},{image_id}.jpg"
        )
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    (root / "categories.csv").write_text("y,category_id,name\n" + "".join(f"{c},{c},{n}\n" for c, n in FIXTURE_CLASSES.items()))


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES,
                              probe=Ridge(scoring="macro_f1"), metric=MACRO_F1))  # fmt: skip
