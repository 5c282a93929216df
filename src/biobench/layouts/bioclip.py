"""BioCLIP's annotation layout for zero-shot sets: a `metadata.csv` of image paths and taxon names.

The BioCLIP 2 and BioCAP evaluation sets (NABirds, the Meta-Album mini sets, IDLE-OO
camera traps, Rare Species) each come as a folder of images and one or more CSVs:

```
DIR/metadata.csv        (camera traps: one CSV per LILA set, e.g. ENA24-balanced.csv)
    ,filepath,scientific_name,common_name,kingdom,phylum,cls,order,family,genus,species,...
    0,ENA24/15181b5c.png,tamias striatus,eastern chipmunk,animalia,chordata,mammalia,rodentia,sciuridae,tamias,striatus
DIR/<filepath>          the image, relative to DIR
```

(the first, unnamed column is pandas' index; other columns are ignored). `NAME_FORMS` are
BioCLIP's text types: the class name a prompt uses. Classes are the distinct names of the
chosen form, sorted; a CSV missing a column that form needs, an empty name, or a listed
image not on disk is a `DataError` naming the file and line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from biobench.examples import Examples, one_per_image
from biobench.images import ImageSet
from biobench.layouts import require_files
from biobench.layouts.tables import read_csv, require_filled

NameForm = Literal["scientific", "common", "taxonomic", "scientific+common", "taxonomic+common"]
RANKS = ("kingdom", "phylum", "cls", "order", "family", "genus", "species")
"""The taxonomic columns, as the BioCLIP CSVs name them (`cls`: class)."""


def columns_for(form: NameForm) -> tuple[str, ...]:
    """The CSV columns a name form reads."""
    parts = {"scientific": ("scientific_name",), "common": ("common_name",), "taxonomic": RANKS}
    return tuple(c for piece in form.split("+") for c in parts[piece])


def _cap(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:]


def class_name(row: dict, form: NameForm) -> str:
    """BioCLIP's text for one row: 'Tamias striatus', 'eastern chipmunk', 'Animalia Chordata ... Tamias striatus',
    or either of the first with ' with common name eastern chipmunk'."""
    first, _, second = form.partition("+")
    if first == "scientific":
        name = _cap(row["scientific_name"])
    elif first == "common":
        name = " ".join(row["common_name"].split())
    else:
        name = " ".join(_cap(row[r]) if r != "species" else row[r].strip().lower() for r in RANKS if (row[r] or "").strip())
    return f"{name} with common name {' '.join(row['common_name'].split())}" if second else name


def taxon_name(ranks: Sequence[str], form: NameForm, common: str = "") -> str:
    """`class_name` of a taxon given as its 7 ranks (kingdom ... genus, species epithet) and, for the `+common` and
    `common` forms, its common name: how tasks whose data holds a taxonomy (iNat21's folders, Rare Species' columns)
    name classes in BioCLIP's text types."""
    if len(ranks) != len(RANKS):
        raise ValueError(f"taxon_name needs the {len(RANKS)} ranks {RANKS}; got {list(ranks)}")
    row = dict(zip(RANKS, (str(r) for r in ranks)))
    row["scientific_name"] = f"{row['genus']} {row['species']}"
    row["common_name"] = common
    return class_name(row, form)


def needs_common(form: NameForm) -> bool:
    """Whether a name form uses the common name."""
    return "common" in form


def read_metadata(task: str, data: Path, csvs: Sequence[Path], form: NameForm, *, subtasks: bool = False) -> Examples:
    """Every row of `csvs` as a test example named by `form` (one sub-task per CSV, named by its stem, with `subtasks`)."""
    need = ("filepath", *columns_for(form))
    frames, rows_subtask = [], []
    for csv in csvs:
        df = read_csv(task, data, csv, need)
        require_filled(task, df, csv, need if "taxonomic" not in form else ("filepath", "genus", "species"))
        paths = [Path(data) / f for f in df["filepath"]]
        require_files(task, paths, [f"line {n} ({f})" for n, f in zip(df["_line"], df["filepath"])], csv)
        names = [class_name(r, form) for r in df.select(need).fill_null("").iter_rows(named=True)]
        frames.append(df.select("filepath").with_columns(pl.Series("name", names), pl.lit(csv.stem).alias("subtask")))
        rows_subtask.append(csv.stem)
    table = pl.concat(frames)
    keys = table["subtask"] if subtasks else pl.Series([""] * table.height)
    classnames: dict[str, tuple[str, ...]] = {}
    labels = np.empty(table.height, dtype=np.int64)
    for key in dict.fromkeys(keys.to_list()):
        mask = (keys == key).to_numpy()
        names = tuple(sorted(set(table["name"].filter(mask).to_list())))
        classnames[key] = names
        index = {n: i for i, n in enumerate(names)}
        labels[mask] = [index[n] for n in table["name"].filter(mask)]
    ids = [f"{s}/{f}" if subtasks else f for s, f in zip(table["subtask"], table["filepath"])]
    images = ImageSet(task, ids, [Path(data) / f for f in table["filepath"]])
    columns = {"subtask": keys.to_list()} if subtasks else None
    return one_per_image(images, labels, ["test"] * table.height, columns=columns, classnames=classnames, subtask_label="set")
