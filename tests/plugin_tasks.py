"""A user's own task, registered from a plugin file: `plugins = ["plugin_tasks.py"]` in a config.

Layout: DIR/labels.csv (file, species, split) and DIR/images/<file>. Probe: SimpleShot; metric: accuracy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl

from biobench import fixtures
from biobench.examples import Examples, one_per_image
from biobench.images import ImageSet
from biobench.layouts import require_files
from biobench.layouts.tables import read_csv
from biobench.probes import SimpleShot
from biobench.tasks import TaskSpec, register_task

SPECIES = ("wren", "robin", "finch")


@dataclasses.dataclass(frozen=True)
class Options:
    """Toy options."""

    data: Path
    """Directory with labels.csv and images/."""


def read(options: Options) -> Examples:
    path = Path(options.data) / "labels.csv"
    df = read_csv("toy", Path(options.data), path, ("file", "species", "split"))
    paths = [Path(options.data) / "images" / f for f in df["file"]]
    require_files("toy", paths, df["file"].to_list(), path)
    labels = np.array([SPECIES.index(s) for s in df["species"]])
    return one_per_image(ImageSet("toy", df["file"].to_list(), paths), labels, df["split"].to_list(), classnames={"": SPECIES})


def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in (("train", 8), ("test", 6)):
        for label, species in enumerate(SPECIES):
            for i in range(n):
                name = f"{split}-{species}-{i}.jpg"
                fixtures.save_jpeg(fixtures.draw(rng, 500, label, strength=0.7), Path(root) / "images" / name)
                rows.append((name, species, split))
    df = pl.DataFrame(rows, schema=["file", "species", "split"], orient="row")
    if shuffle_labels:
        df = df.with_columns(pl.Series("species", rng.permutation(df["species"].to_numpy())))
    df.write_csv(Path(root) / "labels.csv")


SPEC = register_task(TaskSpec(name="toy", version=1, citation="", options=Options, read=read, fixture=make_fixture, probe=SimpleShot()))
