"""Ecdysis: which species is this pinned insect specimen, trained on earlier field visits and tested on later ones?

Ecdysis Foundation's public specimen collection (https://bugbox.ecdysis.bio/, collection 1):
photographs of insects collected on farms and grasslands, identified to species with the
GBIF taxonomy. A real-world task: the training images come from earlier visits than the test images.

Data layout (what `biobench download ecdysis` writes, as the original biobench's script):

```
DIR/metadata.csv        the collection's export: id, specimen_id, image_thumbnail_large, visit_date,
                        gbif_class, gbif_order, gbif_family, gbif_genus, gbif_species, public_url, ...
DIR/images/<file>       <file> = the last part of image_thumbnail_large (e.g. specimen_images/foo.JPG -> foo.JPG)
```

Protocol (the original biobench's): a class is the taxonomy joined,
`class|order|family|genus|species`. Within each class, images sorted by `visit_date`
(ties: file order); the earliest 80% (`int(0.8 n)`) train and the latest 20% test.
Classes with a single image are dropped: the split would put it in test with nothing to
learn from. The original's linear probe (`biobench.probes.Linear`: LayerNorm + one linear
layer, AdamW, 10,000 cosine-decayed steps; `[ecdysis] steps` changes the budget) fits the
training images and predicts the test images; `n_train` is a seeded class-balanced number
of training images. Metric: macro-F1 over the test classes, with a class-stratified
bootstrap interval.

Bad inputs: a row with no image (`image_thumbnail_large` empty) or no `visit_date` is
dropped, counted and logged (the original skipped the first); a missing metadata.csv or
column, a date that is not `YYYY-MM-DD...`, a repeated `id` or image, and a listed image
missing from images/ are `DataError`s naming the file and line.

Zero-shot (the text route, `method = "zero-shot"` models): the test images against the taxon
names in OpenAI's 80 templates.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl

from biobench import download as dl
from biobench import fixtures
from biobench.errors import DataError
from biobench.examples import Examples, one_per_image
from biobench.images import ImageSet
from biobench.layouts import require_files
from biobench.layouts.tables import drop_nulls, read_csv, require_unique
from biobench.metrics import MACRO_F1
from biobench.probes import Linear
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

NAME = "ecdysis"
VERSION = 1
CITATION = """@misc{ecdysis2025bugbox,
  title={Ecdysis Foundation public insect specimen collection},
  author={{Ecdysis Foundation}},
  howpublished={\\url{https://bugbox.ecdysis.bio/samples/collection-download/1}},
  year={2025}
}"""

METADATA, IMAGES_DIR = "metadata.csv", "images"
TAXONOMY = ("gbif_class", "gbif_order", "gbif_family", "gbif_genus", "gbif_species")
TRAIN_FRACTION = 0.8


@dataclasses.dataclass(frozen=True)
class Options:
    """Ecdysis options, from the config file's `[ecdysis]` table."""

    data: Path
    """Directory holding metadata.csv and images/."""
    steps: int = 10_000
    """Linear-probe training steps (the original's)."""


def read(options: Options) -> Examples:
    """One example per image; per class, the earliest 80% of visits train and the rest test."""
    data = Path(options.data)
    csv = data / METADATA
    df = read_csv(NAME, data, csv, ("id", "image_thumbnail_large", "visit_date", *TAXONOMY))
    df, _ = drop_nulls(NAME, df, csv, ("image_thumbnail_large", "visit_date"))
    if df.height == 0:
        raise DataError(f"{NAME}: {csv} lists no image with a visit_date.")
    df = df.with_columns(
        file=pl.col("image_thumbnail_large").str.split("/").list.last(),
        date=pl.col("visit_date").str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False),
        taxon=pl.concat_str([pl.col(c).fill_null("") for c in TAXONOMY], separator="|"),
    )
    bad = df.filter(pl.col("date").is_null())
    if bad.height:
        row = bad.row(0, named=True)
        raise DataError(f"{NAME}: {csv} line {row['_line']}: visit_date must start YYYY-MM-DD, got {row['visit_date']!r}.")
    require_unique(NAME, df, csv, "id", "id")
    require_unique(NAME, df, csv, "file", "image")
    counts = df.group_by("taxon").len()
    single = counts.filter(pl.col("len") == 1)["taxon"]
    if len(single):
        logger.info("%s: dropped %d of %d classes with one image (it could only be tested).", NAME, len(single), counts.height)
        df = df.filter(~pl.col("taxon").is_in(single.implode()))
    df = df.sort("taxon", "date", "_line").with_columns(
        rank=pl.int_range(pl.len()).over("taxon"), n=pl.len().over("taxon")
    )  # fmt: skip
    df = df.with_columns(
        split=pl.when(pl.col("rank") < (pl.col("n") * TRAIN_FRACTION).floor()).then(pl.lit("train")).otherwise(pl.lit("test"))
    )
    paths = [data / IMAGES_DIR / f for f in df["file"]]
    require_files(NAME, paths, [f"line {n} ({f})" for n, f in zip(df["_line"], df["file"])], csv)
    names = sorted(set(df["taxon"]))
    index = {n: i for i, n in enumerate(names)}
    images = ImageSet(NAME, df["id"].to_list(), paths)
    return one_per_image(images, np.array([index[t] for t in df["taxon"]]), df["split"].to_list(), classnames={"": tuple(names)})


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
    """Write metadata.csv and images: 4 species with 20 to 26 images over 2023-2024 visits (file order not by
    date), one species with a single image (dropped), and one row with no image (dropped).

    With `shuffle_labels`, taxonomy rows are permuted among the images after they are drawn."""
    rng, root = np.random.default_rng(seed), Path(root)
    species = [("Insecta", "Coleoptera", "Carabidae", "Pterostichus", "Pterostichus melanarius"),
               ("Insecta", "Coleoptera", "Coccinellidae", "Coccinella", "Coccinella septempunctata"),
               ("Insecta", "Hymenoptera", "Apidae", "Bombus", "Bombus impatiens"),
               ("Insecta", "Diptera", "Syrphidae", "Toxomerus", ""),  # identified to genus only
               ("Insecta", "Hemiptera", "Miridae", "Lygus", "Lygus lineolaris")]  # fmt: skip
    drawn = [c for c in range(4) for _ in range(20 + 2 * c)] + [4]
    taxa = [species[drawn[j]] for j in rng.permutation(len(drawn))] if shuffle_labels else [species[c] for c in drawn]
    rows = []
    for k in rng.permutation(len(drawn)):
        file = f"{fixtures.example_id(rng)[:8]}.JPG"
        fixtures.save_jpeg(fixtures.draw(rng, 13, int(drawn[k]), strength=0.6), root / IMAGES_DIR / file)
        date = f"{2023 + k % 2}-{1 + k % 12:02d}-{1 + k % 28:02d}"
        rows.append({"id": str(1000 + k), "specimen_id": f"ECD{k:05d}", "image_thumbnail_large": f"specimen_images/{file}",
                     "visit_date": date, "country": "United States", "state_region": "South Dakota",
                     **dict(zip(TAXONOMY, taxa[k])), "public_url": f"{IMAGE_BASE}/{file}"})  # fmt: skip
    rows.append({**rows[0], "id": "99999", "image_thumbnail_large": "", "public_url": ""})  # no image: dropped
    pl.DataFrame(rows).write_csv(root / METADATA)


# Download

PAGE_URL = "https://bugbox.ecdysis.bio/samples/collection-download/1"
IMAGE_BASE = "https://bugbox.ecdysis.bio/media/specimen_images"
"""Only for the fixture's `public_url` column: real rows carry their own URL."""


def download_from(root: Path, page_url: str, *, workers: int = 16) -> None:
    """The collection page's current `.csv.zip` link -> metadata.csv, then every row's `public_url` -> images/<file>."""
    root = Path(root)
    if not (root / METADATA).is_file():
        request = urllib.request.Request(page_url, headers={"User-Agent": "biobench"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            page = resp.read().decode("utf-8", "replace")
        found = re.search(r'href="([^"]*\.csv\.zip[^"]*)"', page)
        if found is None:
            raise DataError(f"{NAME}: no .csv.zip link on {page_url}; the page may have changed. Save its CSV as {root / METADATA}.")
        zipped = dl.fetch(urllib.parse.urljoin(page_url, found.group(1)), root / "metadata.csv.zip", desc=f"{NAME}: metadata")
        dl.extract(zipped, root / "metadata.unzipped")
        (inner,) = [p for p in (root / "metadata.unzipped").rglob("*") if p.is_file()] or [None]
        if inner is None:
            raise DataError(f"{NAME}: {zipped} holds no file; delete it and rerun.")
        inner.rename(root / METADATA)  # the export's one member (named "zip" in the original's download)
        zipped.unlink()
    df = read_csv(NAME, root, root / METADATA, ("image_thumbnail_large", "public_url"))
    df, _ = drop_nulls(NAME, df, root / METADATA, ("image_thumbnail_large", "public_url"))
    files = df["image_thumbnail_large"].str.split("/").list.last()
    dl.fetch_many(f"{NAME} images", [(u, root / IMAGES_DIR / f, None) for u, f in zip(df["public_url"], files)], workers=workers)


SPEC = register_task(TaskSpec(NAME, VERSION, CITATION, Options, read, make_fixture, download=lambda root: download_from(root, PAGE_URL),
                              probe=lambda options: Linear(steps=options.steps), metric=MACRO_F1,
                              routes=("probe", "text")))  # fmt: skip
