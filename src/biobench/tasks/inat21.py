"""iNat21: 10,000 species from iNaturalist photographs, ridge on frozen features (a breadth benchmark).

Van Horn & Mac Aodha, "iNat Challenge 2021 - FGVC8" (Kaggle, 2021);
https://github.com/visipedia/inat_comp/tree/master/2021. We train on the "mini" training set
(50 images per species, 500,000 images) and test on the validation set (10 per species, 100,000).

Data layout (as the archives unpack; `biobench download inat21` fetches and checks them, 51 GB):

```
DIR/train_mini/<class>/*.jpg   e.g. train_mini/00000_Animalia_Annelida_Clitellata_Haplotaxida_Lumbricidae_Lumbricus_terrestris/
DIR/val/<class>/*.jpg
DIR/train_mini.json, DIR/val.json   the COCO-style annotations (downloaded, not needed to run)
```

A class folder's name is its id and its taxonomy, kingdom to species; the kingdom (the word
after the id) is kept with each prediction and scores are broken down by it. Class indices
come from the union of both splits' folders, sorted. A missing or empty split folder, or a
class folder with no images, is a `DataError` naming it; other files are ignored; an
unreadable image is a `DataError` when it is embedded.

Zero-shot (the text route, `method = "zero-shot"` models): the val images against each class's
name in the form `names` selects (BioCLIP's text types, read from the folder name: scientific
"Lumbricus terrestris", taxonomic "Animalia Annelida ... Lumbricus terrestris"; the forms with a
common name read it from val.json's `categories` (`common_name`, matched by `image_dir_name`),
a `DataError` naming the file when it is missing or lacks the class), in OpenAI's 80 templates.

Protocol (the original biobench's): standardise the features, one-vs-rest ridge, alpha by
5-fold CV accuracy over 2 ** arange(-15, 5), fit on all of train_mini, score on val. The ridge
never builds the dense 500k x 10k target scikit-learn would (see `biobench.probes.ridge`;
`benchmarks/ridge_memory.py` fits this size in under 8 GiB). `n_train >= 0` trains on a
seeded class-balanced sample. Metric: accuracy on val, with a bootstrap 95% interval.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from biobench import fixtures
from biobench.download import Resource
from biobench.errors import DataError
from biobench.examples import NO_SUBTASK, Examples
from biobench.layouts.bioclip import NameForm, needs_common, taxon_name
from biobench.layouts.folders import read_class_folders
from biobench.metrics import ACCURACY
from biobench.probes import Ridge
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

NAME = "inat21"
VERSION = 1
CITATION = """@misc{inat2021,
  author={Van Horn, Grant and Mac Aodha, Oisin},
  title={iNat Challenge 2021 - FGVC8},
  publisher={Kaggle},
  year={2021},
  url={https://kaggle.com/competitions/inaturalist-2021}
}"""

SPLITS = {"train": "train_mini", "test": "val"}
"""Split -> folder under DIR."""

_S3 = "https://ml-inat-competition-datasets.s3.amazonaws.com/2021"
RESOURCES = (
    Resource(f"{_S3}/train_mini.tar.gz", "train_mini.tar.gz", "db6ed8330e634445efc8fec83ae81442", ("train_mini/*/*.jpg",)),
    Resource(f"{_S3}/val.tar.gz", "val.tar.gz", "f6f6e0e242e3d4c9569ba56400938afc", ("val/*/*.jpg",)),
    Resource(f"{_S3}/train_mini.json.tar.gz", "train_mini.json.tar.gz", "395a35be3651d86dc3b0d365b8ea5f92", ("train_mini.json",)),
    Resource(f"{_S3}/val.json.tar.gz", "val.json.tar.gz", "4d761e0f6a86cc63e8f7afc91f6a8f0b", ("val.json",)),
)
"""The mini training images (42 GB), the validation images (8.4 GB) and their annotations, md5s as published."""


@dataclasses.dataclass(frozen=True)
class Options:
    """iNat21 options, from the config file's `[inat21]` table."""

    data: Path
    """Directory holding train_mini/<class>/*.jpg and val/<class>/*.jpg."""
    names: NameForm = "scientific"
    """Zero-shot only: the class name prompts use (BioCLIP's text types; the common-name forms need val.json)."""
    templates: Literal["openai", "single"] = "openai"
    """Zero-shot only: OpenAI's 80 templates, or one ("a photo of {}.")."""


def kingdom(class_folder: str) -> str:
    """The kingdom in a class folder's name (`00000_Animalia_..._species` -> 'Animalia'); '' when it has no `_`."""
    parts = class_folder.split("_")
    return parts[1] if len(parts) > 2 else ""


def read(options: Options) -> Examples:
    """One example per image: train_mini trains, val tests; `kingdom` from each class folder's name."""
    ex = read_class_folders(NAME, options.data, SPLITS)
    kingdoms = [kingdom(c) for c in ex.names("")]
    table = ex.table.with_columns(pl.Series("kingdom", [kingdoms[i] for i in ex.table["label"].to_list()]))
    return dataclasses.replace(ex, table=table, info=("kingdom",))


def ranks(class_folder: str) -> list[str]:
    """A class folder's 7 ranks: `00000_Animalia_..._Lumbricus_terrestris` -> ['Animalia', ..., 'Lumbricus', 'terrestris']."""
    parts = class_folder.split("_")[1:]
    if len(parts) < 7:
        raise DataError(f"{NAME}: class folder {class_folder!r} is not ID_Kingdom_Phylum_Class_Order_Family_Genus_species.")
    return [*parts[:6], " ".join(parts[6:])]


def common_names(data: Path) -> dict[str, str]:
    """image_dir_name -> common_name from val.json's categories."""
    path = Path(data) / "val.json"
    try:
        categories = json.loads(path.read_text(encoding="utf-8")).get("categories") or []
    except (OSError, ValueError) as err:
        raise DataError(f"{NAME}: common names come from {path}, which cannot be read ({err}); download it, or use names = "
                        '"scientific" or "taxonomic".') from None  # fmt: skip
    return {str(c.get("image_dir_name", "")): str(c.get("common_name") or "") for c in categories}


def text_names(options: Options, examples: Examples) -> dict[str, tuple[str, ...]]:
    """The class names in the form `options.names` chooses, from the folder names (and val.json for common names)."""
    folders = examples.names(NO_SUBTASK)
    common = common_names(options.data) if needs_common(options.names) else {}
    missing = [f for f in folders if needs_common(options.names) and not common.get(f)]
    if missing:
        raise DataError(f"{NAME}: {Path(options.data) / 'val.json'} gives no common_name for class {missing[0]} ({len(missing)} "
                        'such); use names = "scientific" or "taxonomic".')  # fmt: skip
    return {NO_SUBTASK: tuple(taxon_name(ranks(f), options.names, common.get(f, "")) for f in folders)}


############
# Fixture  #
############

FIXTURE_CLASSES = (
    "00000_Animalia_Annelida_Clitellata_Haplotaxida_Lumbricidae_Lumbricus_terrestris",
    "02214_Animalia_Arthropoda_Insecta_Lepidoptera_Nymphalidae_Danaus_plexippus",
    "03111_Animalia_Chordata_Aves_Passeriformes_Turdidae_Turdus_migratorius",
    "05729_Fungi_Basidiomycota_Agaricomycetes_Agaricales_Amanitaceae_Amanita_muscaria",
    "07822_Plantae_Tracheophyta_Magnoliopsida_Asterales_Asteraceae_Taraxacum_officinale",
    "09990_Plantae_Tracheophyta_Pinopsida_Pinales_Pinaceae_Pinus_strobus",
)
"""Real iNat21 folder names (id, kingdom ... species)."""
N_TRAIN, N_VAL = 10, 5
"""Images per class in the fixture's train_mini/ and val/ (the real data: 50 and 10)."""


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
    """Write JPEGs in the real layout: 6 classes, 10 train_mini and 5 val images each, named by UUID as iNat21's.

    Each class has its own tint and stripes. With `shuffle_labels`, images are permuted
    across class folders within each split after drawing, so folders carry no signal.
    """
    rng, root = np.random.default_rng(seed), Path(root)
    for split, n in (("train_mini", N_TRAIN), ("val", N_VAL)):
        labels = np.repeat(np.arange(len(FIXTURE_CLASSES)), n)
        drawn = [fixtures.draw(rng, 2021, int(c), strength=0.7) for c in labels]
        folders = labels[rng.permutation(len(labels))] if shuffle_labels else labels
        for img, c in zip(drawn, folders):
            fixtures.save_jpeg(img, root / split / FIXTURE_CLASSES[c] / f"{fixtures.example_id(rng)}.jpg")
    for name in ("train_mini.json", "val.json"):
        (root / name).write_text('{"images": [], "annotations": [], "categories": []}\n')


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES,
                              probe=Ridge(), metric=ACCURACY, routes=("probe", "text"), text_names=text_names))  # fmt: skip
