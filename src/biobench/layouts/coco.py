"""COCO JSON: `images`, `annotations` and `categories`, one example per annotation.

https://cocodataset.org/#format-data. Re-identification sets (LILA's Beluga and Leopard
ID, 2022) add the individual's id to each annotation (`name`). With `crop`, each
example is its annotation's `bbox` (`[x, y, width, height]` in pixels) cut from the image.
`WildMeExport` names the files (and the download) of LILA's Wild Me exports.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from biobench.download import Resource
from biobench.errors import DataError
from biobench.examples import Examples, one_per_image
from biobench.images import Crop, ImageSet
from biobench.layouts import missing_data, require_files

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Annotation:
    """One annotation, resolved against its image and category."""

    id: str
    path: Path
    category: str | None
    """The category's name (its id where `categories` has none); None when the annotation has no category_id."""
    name: str | None
    """The annotation's `name` (an individual, in re-identification sets), if any."""
    crop: Crop | None


def read_coco(task: str, data: Path, json_path: Path, images_dir: Path, *, crop: bool = False) -> list[Annotation]:
    """Every annotation of `json_path`, images resolved under `images_dir`.

    Malformed JSON, a missing section or key, an annotation naming an unknown image or
    category, or a bad bbox is a `DataError` naming the file and the annotation.
    """
    if not Path(json_path).is_file():
        raise missing_data(task, data, Path(json_path))
    try:
        doc = json.loads(Path(json_path).read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{task}: {json_path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}).") from None
    if not isinstance(doc, dict):
        raise DataError(f"{task}: {json_path} must hold a COCO object with images, annotations and categories.")
    for key in ("images", "annotations"):
        if not isinstance(doc.get(key), list):
            raise DataError(f"{task}: {json_path} lacks the COCO list '{key}'.")
    images = {}
    for i, img in enumerate(doc["images"]):
        _need(task, json_path, img, ("id", "file_name"), f"images[{i}]")
        images[img["id"]] = Path(images_dir) / img["file_name"]
    categories = {}
    for i, cat in enumerate(doc.get("categories") or []):
        _need(task, json_path, cat, ("id",), f"categories[{i}]")
        categories[cat["id"]] = str(cat.get("name", cat["id"]))
    out = []
    for i, ann in enumerate(doc["annotations"]):
        where = f"annotation {ann.get('id', i) if isinstance(ann, dict) else i}"
        _need(task, json_path, ann, ("id", "image_id"), where)
        if ann["image_id"] not in images:
            raise DataError(f"{task}: {json_path}: {where} names image_id {ann['image_id']!r}, which is not in 'images'.")
        cat = ann.get("category_id")
        if cat is not None and categories and cat not in categories:
            raise DataError(f"{task}: {json_path}: {where} names category_id {cat!r}, which is not in 'categories'.")
        box = None
        if crop:
            box = _bbox(task, json_path, ann.get("bbox"), where)
        name = ann.get("name")
        out.append(
            Annotation(
                str(ann["id"]),
                images[ann["image_id"]],
                None if cat is None else categories.get(cat, str(cat)),
                None if name is None else str(name),
                box,
            )
        )
    if not out:
        raise DataError(f"{task}: {json_path} has no annotations.")
    return out


def _need(task: str, path: Path, obj, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(obj, dict):
        raise DataError(f"{task}: {path}: {where} must be a JSON object, got {type(obj).__name__}.")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataError(f"{task}: {path}: {where} lacks key(s) {', '.join(missing)}.")


def _bbox(task: str, path: Path, bbox, where: str) -> Crop:
    ok = isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
    if not ok or bbox[2] <= 0 or bbox[3] <= 0:
        raise DataError(f"{task}: {path}: {where} needs bbox [x, y, width, height] with positive size; got {bbox!r}.")
    x, y, w, h = (float(v) for v in bbox)
    return (x, y, x + w, y + h)


def read_reid(task: str, data: Path, json_path: Path, images_dir: Path, *, crop: bool = False) -> Examples:
    """Re-identification examples from a COCO file whose annotations name their individual (`name`).

    Every annotation is a test example (leave-one-out: there is no training split); label =
    the individual's index among the sorted names, `group` = the individual (for a bootstrap
    that resamples individuals). Without `crop`, two annotations on one image would embed to
    one vector and match each other for free, so that is an error. Individuals seen once
    are kept (they can never be matched, as in the originals) and counted in the log.
    """
    anns = read_coco(task, data, json_path, images_dir, crop=crop)
    unnamed = next((a for a in anns if not a.name), None)
    if unnamed is not None:
        raise DataError(f"{task}: {json_path}: annotation {unnamed.id} has no 'name' (the individual); give every annotation one.")
    if not crop:
        by_path: dict[Path, list[str]] = {}
        for a in anns:
            by_path.setdefault(a.path, []).append(a.id)
        shared = next(((p, ids) for p, ids in by_path.items() if len(ids) > 1), None)
        if shared is not None:
            raise DataError(
                f"{task}: {json_path}: image {shared[0].name} has {len(shared[1])} annotations ({', '.join(shared[1][:5])}); "
                "without crops each image must show one individual. Remove the extra annotations."
            )
    require_files(task, [a.path for a in anns], [f"annotation {a.id}" for a in anns], json_path)
    individuals = [str(a.name) for a in anns]
    counts = Counter(individuals)
    names = sorted(counts)
    singles = sum(1 for n in counts.values() if n == 1)
    if singles:
        logger.info("%s: %d of %d individuals have one image; kept, they always score 0.", task, singles, len(names))
    index = {n: i for i, n in enumerate(names)}
    images = ImageSet(task, [a.id for a in anns], [a.path for a in anns], crops=[a.crop for a in anns] if crop else None)
    labels = np.asarray([index[n] for n in individuals], dtype=np.int64)
    return one_per_image(images, labels, ["test"] * len(anns), columns={"group": individuals}, classnames={"": tuple(names)})


@dataclasses.dataclass(frozen=True)
class WildMeExport:
    """A Wild Me re-identification set as LILA BC publishes it (Beluga and Leopard ID 2022): one archive
    `<stem>.coco.tar.gz` that unpacks to `DIR/<stem>.coco/annotations/instances_train2022.json` and
    `DIR/<stem>.coco/images/train2022/`."""

    stem: str
    """The archive's name before `.coco`, e.g. 'beluga'."""

    @property
    def json(self) -> Path:
        return Path(f"{self.stem}.coco/annotations/instances_train2022.json")

    @property
    def images_dir(self) -> Path:
        return Path(f"{self.stem}.coco/images/train2022")

    @property
    def resource(self) -> Resource:
        """The archive (no md5 is published)."""
        url = f"http://us-west-2.opendata.source.coop.s3.amazonaws.com/agentmorris/lila-wildlife/wild-me/{self.stem}.coco.tar.gz"
        return Resource(url, f"{self.stem}.coco.tar.gz", None, (str(self.json), f"{self.images_dir}/*.jpg"))

    def read(self, task: str, data: Path, *, crop: bool) -> Examples:
        """`read_reid` on the export under `data`."""
        data = Path(data)
        return read_reid(task, data, data / self.json, data / self.images_dir, crop=crop)
