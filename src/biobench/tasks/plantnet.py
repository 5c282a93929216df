"""Pl@ntNet-300K: 1,081 plant species, long-tailed and ambiguous, balanced ridge on frozen features.

Garcin, Joly, Bonnet et al. "Pl@ntNet-300K: a plant image dataset with high label ambiguity and
a long-tailed distribution." NeurIPS Datasets and Benchmarks 2021. https://zenodo.org/records/5645731

Data layout (`biobench download plantnet` fetches the 29.5 GB zip and lifts its top folder):

```
DIR/images/train/<species id>/*.jpg
DIR/images/val/<species id>/*.jpg
DIR/images/test/<species id>/*.jpg
DIR/plantnet300K_species_id_2_name.json   optional: species id -> scientific name
```

Class folders are species ids; when the json is there, class names are the species' names
(MLLM prompts, stored predictions). Class indices come from the union of both used splits'
folders, sorted. A missing or empty split folder, or a class folder with no images, is a
`DataError` naming it; other files are ignored; an unreadable json or image is a `DataError`.

Protocol (the original biobench's): standardise, one-vs-rest ridge with balanced class weights,
alpha by 5-fold CV macro-F1 over 2 ** arange(-15, 11); fit on `train`, score on `val` (the seed's
choice; `test_split = "test"` scores the held-out test images instead). `n_train >= 0` trains on
a seeded class-balanced sample. Metric: mean per-class accuracy (macro top-1: every species
counts the same however many images it has), its bootstrap resampling within each class so
every species stays in every replicate.

Zero-shot (the text route, `method = "zero-shot"` models): the scored images against each
species' name from the json, without its author by default (`names = "scientific"`: "Pelargonium
zonale (L.) L'Hér." -> "Pelargonium zonale"; `"as-given"` keeps it), in OpenAI's 80 templates.
Without the json the classes are ids only, a `DataError` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Literal

import numpy as np

from biobench import fixtures
from biobench.download import Resource
from biobench.errors import DataError
from biobench.examples import NO_SUBTASK, Examples
from biobench.layouts.folders import read_class_folders
from biobench.metrics import MEAN_PER_CLASS_ACCURACY
from biobench.probes import Ridge
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

NAME = "plantnet"
VERSION = 1
CITATION = """@inproceedings{plantnet-300k,
  author={Garcin, Camille and Joly, Alexis and Bonnet, Pierre and Lombardo, Jean-Christophe and Affouard, Antoine and Chouet, Mathias and Servajean, Maximilien and Lorieul, Titouan and Salmon, Joseph},
  booktitle={NeurIPS Datasets and Benchmarks 2021},
  title={{Pl@ntNet-300K}: a plant image dataset with high label ambiguity and a long-tailed distribution},
  year={2021}
}"""

SPECIES_NAMES = "plantnet300K_species_id_2_name.json"
UNPACKED = "plantnet_300K"
"""The zip's top folder, whose contents `place_download` moves up into DIR."""
RESOURCES = (Resource("https://zenodo.org/records/5645731/files/plantnet_300K.zip", "plantnet_300K.zip", None,
                      ("images/train/*/*.jpg", "images/val/*/*.jpg", "images/test/*/*.jpg")),)  # fmt: skip
"""The images and metadata, one zip (Zenodo publishes no md5 with the file)."""


@dataclasses.dataclass(frozen=True)
class Options:
    """Pl@ntNet options, from the config file's `[plantnet]` table."""

    data: Path
    """Directory holding images/{train,val,test}/<species id>/*.jpg."""
    test_split: Literal["val", "test"] = "val"
    """The split that is scored: 'val' as the original biobench, or the held-out 'test'."""
    names: Literal["scientific", "as-given"] = "scientific"
    """Zero-shot only: species names without their author ('scientific') or as the json gives them."""
    templates: Literal["openai", "single"] = "openai"
    """Zero-shot only: OpenAI's 80 templates, or one ("a photo of {}.")."""


def read(options: Options) -> Examples:
    """One example per image: images/train trains, images/<test_split> tests; species names from the json if present."""
    ex = read_class_folders(NAME, options.data, {"train": "images/train", "test": f"images/{options.test_split}"})
    path = Path(options.data) / SPECIES_NAMES
    if not path.is_file():
        return ex
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{NAME}: cannot read {path} ({err}); re-download it or delete it to use species ids.") from None
    classes = [str(names.get(c, c)) for c in ex.names(NO_SUBTASK)]
    return dataclasses.replace(ex, classnames={NO_SUBTASK: tuple(classes)})


RANK_WORDS = ("subsp.", "ssp.", "var.", "f.", "×", "x")
"""Words inside a plant name that are not its author (infraspecific ranks, the hybrid sign)."""


def without_author(name: str) -> str:
    """A species name without its author: the genus, then lowercase epithets and rank words, up to the first other word
    ("Cirsium vulgare (Savi) Ten." -> "Cirsium vulgare", "Mentha × piperita L." -> "Mentha × piperita")."""
    words = name.split()
    kept = words[:1]
    for w in words[1:]:
        if w in RANK_WORDS or (w[:1].islower() and not w.endswith(".")):
            kept.append(w)
        else:
            break
    return " ".join(kept)


def text_names(options: Options, examples: Examples) -> dict[str, tuple[str, ...]]:
    """Species names (the json's) for zero-shot prompts; a `DataError` when the json is not there."""
    path = Path(options.data) / SPECIES_NAMES
    if not path.is_file():
        raise DataError(f"{NAME}: zero-shot prompts with species names, which come from {path}; it is missing "
                        f"(it ships in the dataset's zip: rerun `biobench download {NAME}` or copy it there).")  # fmt: skip
    names = examples.names(NO_SUBTASK)
    return {NO_SUBTASK: tuple(names if options.names == "as-given" else (without_author(n) for n in names))}


def place_download(root: Path) -> None:
    """Move the unpacked plantnet_300K/ folder's contents up into `root` (a no-op when already there)."""
    top = Path(root) / UNPACKED
    if not top.is_dir():
        return
    for item in top.iterdir():
        dest = Path(root) / item.name
        if dest.is_dir():  # a fresh download replaces an old copy
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        item.rename(dest)
    top.rmdir()


############
# Fixture  #
############

FIXTURE_SPECIES = {"1355868": "Lactuca virosa L.", "1355920": "Pelargonium zonale (L.) L'Hér.",
                   "1356111": "Cirsium vulgare (Savi) Ten.", "1363227": "Tagetes erecta L.", "1392475": "Zamia furfuracea L.f."}  # fmt: skip
"""Real Pl@ntNet species ids and names."""
TRAIN_SIZES = (16, 10, 6, 4, 4)
"""Training images per species: long-tailed, as the real data."""


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
    """Write JPEGs in the real layout: 5 species with 16..4 train images and 4 val and 2 test images each, plus the json.

    With `shuffle_labels`, images are permuted across species folders within each split.
    """
    rng, root = np.random.default_rng(seed), Path(root)
    ids = list(FIXTURE_SPECIES)
    for split, sizes in (("train", TRAIN_SIZES), ("val", (4,) * 5), ("test", (2,) * 5)):
        labels = np.repeat(np.arange(len(ids)), sizes)
        drawn = [fixtures.draw(rng, 300, int(c), strength=0.7) for c in labels]
        folders = labels[rng.permutation(len(labels))] if shuffle_labels else labels
        for img, c in zip(drawn, folders):
            fixtures.save_jpeg(img, root / "images" / split / ids[c] / f"{rng.bytes(20).hex()}.jpg")
    (root / SPECIES_NAMES).write_text(json.dumps(FIXTURE_SPECIES, ensure_ascii=False), encoding="utf-8")


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, resources=RESOURCES, download=place_download,
                              probe=Ridge(class_weight="balanced", scoring="macro_f1", log2_alpha=(-15, 11)),
                              metric=MEAN_PER_CLASS_ACCURACY, routes=("probe", "text"), text_names=text_names))  # fmt: skip
