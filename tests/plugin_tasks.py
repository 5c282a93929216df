"""A user's own task, registered from a plugin file: `plugins = ["plugin_tasks.py"]` in a config.

Layout: DIR/labels.csv (file, species, split) and DIR/images/<file>. Probe: SimpleShot; metric: accuracy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl

from biobench import fixtures
from biobench.examples import Examples
from biobench.layouts.tables import read_examples
from biobench.probes import SimpleShot
from biobench.tasks import TaskSpec, register_task

SPECIES = ("finch", "robin", "wren")


@dataclasses.dataclass(frozen=True)
class Options:
    """Toy options."""

    data: Path
    """Directory with labels.csv and images/."""


def read(options: Options) -> Examples:
    data = Path(options.data)
    return read_examples("toy", data, data / "labels.csv", data / "images", image="file", label="species")


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
