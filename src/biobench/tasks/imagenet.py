"""ImageNet-1k: 1,000 everyday object classes, ridge on frozen features (the general-vision reference point).

Russakovsky, Deng, Su et al. "ImageNet Large Scale Visual Recognition Challenge." IJCV 115, 2015.
https://image-net.org/ ; on the Hugging Face Hub as `ILSVRC/imagenet-1k` (gated: log in and accept
its terms first; `biobench download imagenet` prints the steps).

Data layout, any of (see `biobench.layouts.hf`):

```
DIR/data/train-00000-of-00294.parquet ...        the Hub's parquet shards (columns image {bytes, path}, label)
DIR/data/validation-00000-of-00014.parquet ...
DIR/dataset_dict.json, DIR/{train,validation}/   the same saved with `datasets`' save_to_disk (Arrow shards)
DIR/train/<wnid>/*.JPEG, DIR/val/<wnid>/*.JPEG   an ImageFolder (class folders; read when DIR/val/ exists)
```

The images stay inside the shards (`TableImage`): nothing is extracted. Class indices are the
dataset's `label` (its ClassLabel names are the class names); in an ImageFolder they are the
sorted wnids, which is the same order. The Hub's `test` split has no labels and is not used.

Protocol (the original biobench's): standardise the features, ridge classifier with alpha chosen
by 5-fold CV accuracy over 2 ** arange(-15, 5); train on `train`, score on `validation` (50,000
images). `n_train >= 0` trains on a seeded class-balanced sample. Metric: accuracy, bootstrap 95%
interval. Bad inputs are `DataError`s naming the file: a split that is not there, a shard that is
unreadable or lacks `label`, a label that is empty or outside the class list (e.g. the test
split's -1), and (ImageFolder) an empty class folder; an undecodable image stops embedding with
its file and row.

Zero-shot (the text route, `method = "zero-shot"` models): the validation images against the first
of each class's synonyms from the label feature ("tench, Tinca tinca" -> "tench") in OpenAI's 80
templates (not CLIP's hand-edited ImageNet names, so scores sit below CLIP's published ones).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl

from biobench import fixtures
from biobench.errors import DataError
from biobench.examples import Examples, one_per_image
from biobench.layouts import hf
from biobench.layouts.folders import read_class_folders
from biobench.metrics import ACCURACY
from biobench.probes import Ridge
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

NAME = "imagenet"
VERSION = 1
CITATION = """@article{russakovsky2015imagenet,
  title={{ImageNet} Large Scale Visual Recognition Challenge},
  author={Russakovsky, Olga and Deng, Jia and Su, Hao and Krause, Jonathan and Satheesh, Sanjeev and Ma, Sean and Huang,
          Zhiheng and Karpathy, Andrej and Khosla, Aditya and Bernstein, Michael and Berg, Alexander C. and Fei-Fei, Li},
  journal={International Journal of Computer Vision},
  volume={115},
  number={3},
  pages={211--252},
  year={2015}
}"""

REPO = "ILSVRC/imagenet-1k"
HUB_SPLITS = {"train": "train", "validation": "test"}
"""Hub split -> biobench split."""
FOLDERS = {"train": "train", "test": "val"}
"""ImageFolder: biobench split -> folder."""


@dataclasses.dataclass(frozen=True)
class Options:
    """ImageNet-1k options, from the config file's `[imagenet]` table."""

    data: Path
    """Directory holding the Hub's parquet shards, a save_to_disk copy, or train/ and val/ class folders."""


def read(options: Options) -> Examples:
    """One example per image: `train` trains, `validation` (or val/) tests."""
    data = Path(options.data)
    if (data / "val").is_dir() and not (data / "train" / "state.json").is_file():
        return read_class_folders(NAME, data, FOLDERS)
    parts, names = [], None
    for hub_split, split in HUB_SPLITS.items():
        found, rows = hf.read_split(NAME, data, hub_split, ["label"])
        names = names or found.class_names("label")
        n = len(names) if names else 1000
        bad = rows.filter(pl.col("label").is_null() | (pl.col("label") < 0) | (pl.col("label") >= n))
        if bad.height:
            row = bad.row(0, named=True)
            raise DataError(f"{NAME}: {row['_file']} row {row['_row']}: label {row['label']} is not a class 0..{n - 1}; "
                            f"fix or remove the {bad.height} such row(s).")  # fmt: skip
        column = hf.image_column(NAME, found)
        parts.append(rows.with_columns(pl.lit(split).alias("split"), pl.lit(column).alias("_column"),
                                       pl.format("{}/{}", pl.lit(hub_split), pl.int_range(pl.len())).alias("id")))  # fmt: skip
    rows = pl.concat(parts, how="vertical_relaxed")
    if rows["_column"].n_unique() > 1:
        raise DataError(f"{NAME}: the train and validation shards under {data} name their image column differently.")
    images = hf.table_images(NAME, rows, rows["_column"][0], rows["id"].to_list())
    return one_per_image(images, rows["label"].to_numpy(), rows["split"].to_list(), classnames={"": names or ()})


def download(root: Path) -> None:
    """ImageNet is gated on the Hub: raise the steps to fetch it."""
    layout = "  {dir}/data/train-*.parquet and {dir}/data/validation-*.parquet (the Hub's files), or a save_to_disk copy,\n" \
             "  or an ImageFolder {dir}/train/<wnid>/*.JPEG + {dir}/val/<wnid>/*.JPEG."  # fmt: skip
    raise hf.hub_steps(NAME, root, REPO, layout, gated=True)


############
# Fixture  #
############

FIXTURE_CLASSES = (("n01440764", "tench, Tinca tinca"), ("n01530575", "brambling, Fringilla montifringilla"),
                   ("n01644373", "tree frog, tree-frog"), ("n02085620", "Chihuahua"), ("n02123045", "tabby, tabby cat"))  # fmt: skip
N_TRAIN, N_TEST = 10, 6
"""Images per class."""


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False, layout: str = "parquet") -> None:
    """Write 5 classes (N_TRAIN training, N_TEST validation images each) as the Hub's parquet shards
    (train in 2 shards), or with `layout` 'saved' as a save_to_disk DatasetDict, or 'folders' as an ImageFolder.

    With `shuffle_labels`, labels are permuted within each split after the images are drawn."""
    rng, root = np.random.default_rng(seed), Path(root)
    features = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": [n for _, n in FIXTURE_CLASSES]}}
    tables = {}
    for hub_split, n in (("train", N_TRAIN), ("validation", N_TEST)):
        drawn = np.tile(np.arange(len(FIXTURE_CLASSES)), n)
        labels = rng.permutation(drawn) if shuffle_labels else drawn
        images = [fixtures.draw(rng, 1000, int(c)) for c in drawn]
        names = [f"{FIXTURE_CLASSES[c][0]}_{k}.JPEG" if hub_split == "train" else f"ILSVRC2012_val_{k + 1:08d}.JPEG"
                 for k, c in enumerate(labels)]  # fmt: skip
        if layout == "folders":
            for img, name, c in zip(images, names, labels):
                fixtures.save_jpeg(img, root / FOLDERS[HUB_SPLITS[hub_split]] / FIXTURE_CLASSES[c][0] / name)
            continue
        tables[hub_split] = fixtures.hf_table(images, names, {"label": labels.astype(np.int64)})
        if layout == "parquet":
            fixtures.write_hf_parquet(tables[hub_split], root, hub_split, n_shards=2 if hub_split == "train" else 1, features=features)
    if layout == "saved":
        fixtures.write_hf_saved(tables, root, n_shards=2, features=features)


def text_names(options: Options, examples: Examples) -> dict[str, tuple[str, ...]]:
    """Zero-shot names: the first of each class's synonyms ("tench, Tinca tinca" -> "tench")."""
    return {k: tuple(n.split(",")[0] for n in v) for k, v in examples.classnames.items()}


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, download=download, probe=Ridge(),
                              metric=ACCURACY, routes=("probe", "text"), text_names=text_names))  # fmt: skip
