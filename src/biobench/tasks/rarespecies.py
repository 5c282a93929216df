"""Rare Species: 400 IUCN Red List species (30 photos each, from EOL), k-shot SimpleShot on frozen features.

Stevens, Wu, Thompson et al. "BioCLIP: A Vision Foundation Model for the Tree of Life." CVPR 2024.
https://huggingface.co/datasets/imageomics/rare-species (public, CC0 compilation). The species are
held out of TreeOfLife-10M, so they test generalisation to taxa a model has rarely seen.

Data layout (`biobench download rarespecies` prints the steps), any of:

```
DIR/dataset_dict.json, DIR/train/...            save_to_disk copy (Arrow shards; image column `image` or `file_name`)
DIR/data/train-00000-of-0000N.parquet ...       the Hub's parquet shards (image {bytes, path} in `file_name`)
DIR/metadata.csv + DIR/dataset/<taxon>/*.jpg    the image-folder release: `file_name` is the image path under DIR
```

Every layout has the columns `rarespecies_id` and the 7 ranks `kingdom phylum class order family
genus species`; the label is the 7 ranks joined (400 classes). Five species have fewer than 30
distinct photos (the card lists them); they are kept as they are.

Protocol (BioCLIP's one- and five-shot): `k` images of every species train (a seeded draw,
`split_seed`), all the others test; SimpleShot (centre on the training mean, L2-normalise,
nearest centroid). Metric: accuracy over the test images, bootstrap 95% interval. The training set
is the k shots, so there is no `n_train` sweep (runs at n_train = -1). Bad inputs are `DataError`s
naming the file: a missing dataset, a shard or CSV without one of the columns, an empty rank, a
repeated `rarespecies_id`, and (image-folder layout) a listed image missing on disk.

Zero-shot (the text route, `method = "zero-shot"` models): the test images (those the k shots
leave) against each species' name in the form `names` selects (BioCLIP's text types from the 7
ranks: scientific "Haliaeetus vociferoides", taxonomic "Animalia Chordata ... Haliaeetus
vociferoides"; the common-name forms read the dataset's `common` column, a `DataError` naming the
file when it lacks it), in OpenAI's 80 templates.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from biobench import fixtures
from biobench.errors import DataError
from biobench.examples import NO_SUBTASK, Examples, one_per_image
from biobench.images import ImageSet
from biobench.layouts import hf, require_files
from biobench.layouts.bioclip import NameForm, needs_common, taxon_name
from biobench.layouts.tables import read_csv, require_filled, require_unique
from biobench.metrics import ACCURACY
from biobench.probes import SimpleShot
from biobench.sampling import k_per_class
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

NAME = "rarespecies"
VERSION = 1
CITATION = """@inproceedings{stevens2024bioclip,
  title={{BioCLIP}: A Vision Foundation Model for the Tree of Life},
  author={Stevens, Samuel and Wu, Jiaman and Thompson, Matthew J. and Campolongo, Elizabeth G. and Song, Chan Hee and
          Carlyn, David Edward and Dong, Li and Dahdul, Wasila M. and Stewart, Charles and Berger-Wolf, Tanya and
          Chao, Wei-Lun and Su, Yu},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={19412--19424},
  year={2024}
}"""

REPO = "imageomics/rare-species"
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
ID = "rarespecies_id"
COMMON = "common"
"""The common-name column (read only for the zero-shot name forms that use it)."""


@dataclasses.dataclass(frozen=True)
class Options:
    """Rare Species options, from the config file's `[rarespecies]` table."""

    data: Path
    """Directory holding the dataset (save_to_disk copy, the Hub's parquet shards, or metadata.csv + dataset/)."""
    k: int = 1
    """Training images per species: 1 or 5 in BioCLIP (one- and five-shot)."""
    split_seed: int = 0
    """Seeds which k images of each species train."""
    names: NameForm = "scientific"
    """Zero-shot only: the class name prompts use (BioCLIP's text types; the common-name forms need `common`)."""
    templates: Literal["openai", "single"] = "openai"
    """Zero-shot only: OpenAI's 80 templates, or one ("a photo of {}.")."""


def read(options: Options) -> Examples:
    """One example per image; `k` per species train, the rest test; label = the 7 ranks joined."""
    if options.k < 1:
        raise DataError(f"{NAME}: k must be at least 1 (images per species that train); got {options.k}.")
    data = Path(options.data)
    extra = (COMMON,) if needs_common(options.names) else ()
    if hf.find_split(NAME, data, "train") is not None or not (data / "metadata.csv").is_file():
        found, rows = hf.read_split(NAME, data, "train", (ID, *RANKS, *extra))
        where = f"{data} (split train)"
        rows = rows.with_columns(pl.col(ID).cast(pl.Utf8), *(pl.col(r).cast(pl.Utf8) for r in RANKS))
        require_filled(NAME, rows, where, RANKS)
        images = hf.table_images(NAME, rows, hf.image_column(NAME, found, ("image", "file_name")), rows[ID].to_list())
    else:
        where = data / "metadata.csv"
        rows = read_csv(NAME, data, where, ("file_name", ID, *RANKS, *extra))
        require_filled(NAME, rows, where, ("file_name", ID, *RANKS))
        paths = [data / f for f in rows["file_name"]]
        require_files(NAME, paths, [f"line {n} ({i})" for n, i in zip(rows["_line"], rows[ID])], where)
        images = ImageSet(NAME, rows[ID].to_list(), paths)
    require_unique(NAME, rows, where, ID, ID)
    taxa = rows.select(pl.concat_str([pl.col(r).str.strip_chars() for r in RANKS], separator=" "))["kingdom"].to_numpy()
    names = np.unique(taxa)
    labels = np.searchsorted(names, taxa)
    train = np.zeros(len(labels), dtype=bool)
    train[k_per_class(labels, options.k, np.random.default_rng(options.split_seed))] = True
    unseen = len(names) - len(np.unique(labels[~train]))
    if unseen:
        logger.info("%s: %d of %d species have at most k=%d images, so none to test.", NAME, unseen, len(names), options.k)
    columns = {COMMON: rows[COMMON].cast(pl.Utf8).fill_null("").to_list()} if extra else None
    return one_per_image(images, labels, np.where(train, "train", "test").tolist(), classnames={"": tuple(names.tolist())},
                         columns=columns)  # fmt: skip


def text_names(options: Options, examples: Examples) -> dict[str, tuple[str, ...]]:
    """The species' names in the form `options.names` chooses, from the 7 ranks (and the `common` column)."""
    taxa = examples.names(NO_SUBTASK)
    common = [""] * len(taxa)
    if needs_common(options.names):
        t = examples.table
        for label, name in zip(t["label"].to_list(), t[COMMON].to_list()):
            common[label] = common[label] or " ".join(str(name).split())
        if missing := [taxa[i] for i, c in enumerate(common) if not c]:
            raise DataError(f"{NAME}: no row under {options.data} gives a `common` name for {missing[0]} "
                            f"({len(missing)} such); use names = \"scientific\" or \"taxonomic\".")  # fmt: skip
    return {NO_SUBTASK: tuple(taxon_name(t.split(" ", len(RANKS) - 1), options.names, c) for t, c in zip(taxa, common))}


def download(root: Path) -> None:
    """The Hub's files are fetched with its own client: raise the steps."""
    layout = "  {dir}/metadata.csv and {dir}/data/train-*.parquet (the Hub's files), or a save_to_disk copy of it."
    raise hf.hub_steps(NAME, root, REPO, layout, gated=False)


############
# Fixture  #
############

FIXTURE_SPECIES = (("Chordata", "Aves", "Accipitriformes", "Accipitridae", "Haliaeetus", "vociferoides"),
                   ("Chordata", "Reptilia", "Squamata", "Chamaeleonidae", "Calumma", "ambreense"),
                   ("Chordata", "Reptilia", "Testudines", "Chelidae", "Acanthochelys", "macrocephala"),
                   ("Chordata", "Actinopterygii", "Siluriformes", "Siluridae", "Wallago", "attu"),
                   ("Arthropoda", "Insecta", "Hymenoptera", "Formicidae", "Pheidole", "elecebra"),
                   ("Cnidaria", "Anthozoa", "Scleractinia", "Acroporidae", "Acropora", "millepora"))  # fmt: skip
FIXTURE_COMMON = ("Madagascar fish eagle", "Amber Mountain chameleon", "big-headed side-necked turtle", "wallago",
                  "Pheidole elecebra ant", "staghorn coral")  # fmt: skip
N_PER_SPECIES = 7


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False, layout: str = "saved") -> None:
    """Write 6 species x N_PER_SPECIES photos as a save_to_disk DatasetDict (one `train` split, image column
    `image`), or with `layout` 'parquet' as the Hub's parquet shards (image column `file_name`), or
    'folders' as metadata.csv + dataset/<taxon>/*.jpg. `shuffle_labels` permutes the taxa after drawing."""
    rng, root = np.random.default_rng(seed), Path(root)
    drawn = np.repeat(np.arange(len(FIXTURE_SPECIES)), N_PER_SPECIES)
    taxa = rng.permutation(drawn) if shuffle_labels else drawn
    images = [fixtures.draw(rng, 400, int(c), strength=0.8) for c in drawn]
    ids = [fixtures.example_id(rng) for _ in drawn]
    files = [f"{1000 + k}_{40000 + t}_eol_full-size-copy.jpg" for k, t in enumerate(taxa)]
    columns = {ID: ids, "kingdom": ["Animalia"] * len(ids), **{r: [FIXTURE_SPECIES[t][i] for t in taxa] for i, r in enumerate(RANKS[1:])}}
    columns["sciName"] = [f"{g} {s}" for g, s in zip(columns["genus"], columns["species"])]
    columns[COMMON] = [FIXTURE_COMMON[t] for t in taxa]
    if layout == "folders":
        folders = ["_".join(["Animalia", *FIXTURE_SPECIES[t]]) for t in taxa]
        for img, folder, f in zip(images, folders, files):
            fixtures.save_jpeg(img, root / "dataset" / folder / f)
        pl.DataFrame({"file_name": [f"dataset/{d}/{f}" for d, f in zip(folders, files)], **columns}).write_csv(root / "metadata.csv")
        return
    image = "file_name" if layout == "parquet" else "image"
    table = fixtures.hf_table(images, files, columns, image=image)
    features = {image: {"_type": "Image"}, **{c: {"dtype": "string", "_type": "Value"} for c in columns}}
    if layout == "parquet":
        fixtures.write_hf_parquet(table, root, "train", n_shards=2, features=features)
    else:
        fixtures.write_hf_saved({"train": table}, root, n_shards=3, features=features)


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, download=download, probe=SimpleShot(),
                              metric=ACCURACY, uses_n_train=False, routes=("probe", "text"), text_names=text_names))  # fmt: skip
