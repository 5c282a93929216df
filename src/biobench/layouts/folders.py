"""Class folders: `ROOT/<split>/<class>/<image>` (ImageFolder's layout, one folder per split).

One class index is built from the union of every split's class folders (sorted by name),
so a class that appears in only one split keeps the same index everywhere. Image files
are found by extension in any case (`.JPG`, `.png`, ...); other files are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from biobench.errors import DataError
from biobench.examples import Examples, one_per_image
from biobench.images import ImageSet
from biobench.layouts import IMAGE_EXTENSIONS, missing_data


def read_class_folders(task: str, data: Path, splits: Mapping[str, str], **kwargs) -> Examples:
    """Examples from `data/<folder>/<class>/*` for each split (`splits` maps 'train'/'test' to a folder name).

    Ids are `FOLDER/CLASS/FILE`. An empty or missing split folder, or an empty class
    folder, is a `DataError` naming it. `kwargs` go to `Examples` (e.g. `info`).
    """
    data = Path(data)
    found: dict[str, dict[str, list[Path]]] = {}
    for split, folder in splits.items():
        root = data / folder
        if not root.is_dir():
            raise missing_data(task, data, root)
        classes = sorted(p for p in root.iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"{task}: {root} has no class folders; expected {root}/<class>/<image>.")
        found[split] = {}
        for c in classes:
            files = sorted(p for p in c.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise DataError(
                    f"{task}: class folder {c} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                    "add its images or remove the folder."
                )
            found[split][c.name] = files
    names = sorted({c for per in found.values() for c in per})
    index = {c: i for i, c in enumerate(names)}
    ids, paths, labels, split_of = [], [], [], []
    for split, per in found.items():
        for c, files in per.items():
            for f in files:
                ids.append(f"{splits[split]}/{c}/{f.name}")
                paths.append(f)
                labels.append(index[c])
                split_of.append(split)
    images = ImageSet(task, ids, paths)
    return one_per_image(images, np.asarray(labels), split_of, classnames={"": tuple(names)}, **kwargs)
