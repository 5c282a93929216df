"""Your own dataset as a task, with no code: a config's `[tasks.NAME]` table.

```toml
[tasks.mybirds]
layout = "folders"                         # "folders", "csv" or "coco"
data = "data/mybirds"                      # or `mybirds = "..."` under [data], which wins ("" there skips it)
probe = "ridge"                            # ridge (default), logistic, simpleshot, knn, svm (NeWT's SVM search)
metric = "accuracy"                        # accuracy (default), mean-per-class-accuracy, macro-f1
splits = {train = "train", test = "val"}
```

Keys of every table: `layout` (required), `data`, `probe`, `probe_options` (the probe's own
fields, e.g. `{k = 5}` for knn, `{class_weight = "balanced"}` for ridge, `{c = 0.1}` for
logistic), `metric`, `kind` (what `biobench tasks` lists; default classification),
`version` (default 1; bump it after changing the images in place, so old results are not
reused) and `citation`. Every path is relative to the data directory.

- `folders`: `DATA/<folder>/<class>/<image>`; `splits = {train = FOLDER, test = FOLDER}`
  (default "train" and "test").
- `csv`: one row per image. `csv` (default "labels.csv"), `images` (the folder the file
  column is relative to; default the data directory), `columns = {file = ..., label = ...,
  split = ...}` (the column names; default file, label, split), `splits = {train = VALUE,
  test = VALUE}` (the split column's values, a list for several; default "train", "test"),
  `separator` (default ",").
- `coco`: one example per annotation. Classification: `splits = {train = JSON, test =
  JSON}`, `label` = "category" (default) or "name" (the annotation's `name` field).
  Re-identification: `json = JSON` instead of `splits`; every annotation is a query against
  all the others (leave-one-out; probe knn or exemplar-svm, metric top1 resampled by
  individual, label = the `name` field; `n_train` does not apply). `images` (the folder
  `file_name` is relative to: one for all, or `{train = DIR, test = DIR}`; default the data
  directory), `crop` (default false; true cuts each annotation's bbox out of its image).

The table registers a `TaskSpec` when the config is loaded (`biobench.config`), which then
runs like a built-in task: `biobench run`, `--dry-run`, `report`, `biobench tasks --config`,
`biobench fixture NAME --config` (a small generated dataset in the table's layout and names).
Its protocol id is `NAME/vVERSION#HASH`, HASH over the table with its defaults filled in
(not `data`, `kind` or `citation`), so two different tables never share a result and one
table reuses its results from any config. A mistake in the table is a `ConfigError` naming
the table and the key; a split folder, CSV or JSON file that is not there is a `DataError`
naming the key that points at it; the shared readers' checks (empty class folder, CSV row
whose image is missing, annotation without a category, bad bbox) are `DataError`s too:
nothing is skipped silently.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from biobench import fixtures
from biobench.errors import ConfigError, DataError
from biobench.examples import Examples, one_per_image
from biobench.images import ImageSet
from biobench.layouts import require_files
from biobench.layouts.coco import read_coco, read_reid
from biobench.layouts.folders import read_class_folders
from biobench.layouts.tables import read_examples
from biobench.metrics import ACCURACY, MACRO_F1, MEAN_PER_CLASS_ACCURACY, TOP1, Metric
from biobench.probes import ExemplarSvm, Knn, LeaveOneOutKnn, Logistic, Probe, Ridge, SimpleShot, Svm
from biobench.tasks import register_task, task_names
from biobench.tasks.spec import KINDS, TaskSpec

LAYOUTS = ("folders", "csv", "coco")
PROBES: dict[str, type[Probe]] = {p.short_name: p for p in (Ridge, Logistic, SimpleShot, Knn, Svm)}
REID_PROBES: dict[str, type[Probe]] = {"knn": LeaveOneOutKnn, "exemplar-svm": ExemplarSvm}
METRICS: dict[str, Metric] = {"accuracy": ACCURACY, "mean-per-class-accuracy": MEAN_PER_CLASS_ACCURACY, "macro-f1": MACRO_F1}
REID_METRICS: dict[str, Metric] = {"top1": TOP1}
COMMON_KEYS = ("layout", "data", "probe", "probe_options", "metric", "kind", "version", "citation")
LAYOUT_KEYS = {"folders": ("splits",), "csv": ("csv", "images", "columns", "splits", "separator"),
               "coco": ("splits", "json", "images", "label", "crop")}  # fmt: skip
ROLES = ("train", "test")


@dataclasses.dataclass(frozen=True)
class Options:
    """A declared task's options: only its data directory (the rest is its `[tasks.NAME]` table)."""

    data: Path
    """The dataset directory (`data` in the table, or the task's `[data]` entry)."""


@dataclasses.dataclass(frozen=True)
class Declared:
    """A `[tasks.NAME]` table, checked, with its defaults filled in."""

    name: str
    layout: str
    data: Path | None
    """The table's `data` (resolved against the config's folder), if it gives one."""
    probe: Probe
    metric: str
    kind: str
    version: int
    citation: str
    settings: Mapping[str, Any]
    """The layout's keys, defaults filled in (paths as given, relative to the data directory)."""

    @property
    def reid(self) -> bool:
        return self.layout == "coco" and self.settings["json"] is not None

    @property
    def definition(self) -> str:
        """Hash of what defines the protocol: layout, its keys, probe and its options, metric."""
        text = {"layout": self.layout, "probe": [self.probe.display_name(), dataclasses.asdict(self.probe)], "metric": self.metric,
                **self.settings}  # fmt: skip
        return hashlib.sha256(json.dumps(text, sort_keys=True, default=list).encode()).hexdigest()[:10]


_DECLARED: dict[str, tuple[Declared, TaskSpec]] = {}


def declare(name: str, table: Mapping[str, Any], base: Path, at: Callable[[str], str] = lambda key: "<config>") -> Declared:
    """Check the `[tasks.NAME]` table and register its task; `at(key)` locates a key for messages (file:line; "" = the table)."""
    decl = parse(name, table, base, at)
    previous = _DECLARED.get(name)
    if previous is None and name in task_names():
        raise ConfigError(f"{at('')}: [tasks.{name}]: '{name}' is already a task (built in or from a plugin); pick another name.")
    if previous is not None and dataclasses.replace(previous[0], data=decl.data) == decl:
        return decl  # the same table (wherever its data is): the same spec
    spec = TaskSpec(
        name, decl.version, decl.citation, Options, _reader(decl), _fixture(decl), probe=decl.probe,
        metric=(REID_METRICS if decl.reid else METRICS)[decl.metric], uses_n_train=not decl.reid, kind=decl.kind,
        definition=decl.definition,
    )  # fmt: skip
    _DECLARED[name] = (decl, register_task(spec))
    return decl


def declared(name: str) -> Declared | None:
    """The table a declared task came from (None for other tasks)."""
    entry = _DECLARED.get(name)
    return entry[0] if entry is not None else None


###########
# Parsing #
###########


class _Table:
    """Reads one table's keys, each mistake a ConfigError naming `[tasks.NAME] KEY`."""

    def __init__(self, name: str, raw: Mapping[str, Any], at: Callable[[str], str]):
        self.name, self.raw, self.at = name, raw, at

    def fail(self, key: str, msg: str) -> ConfigError:
        shown = f" = {json.dumps(self.raw[key])}" if key in self.raw and not isinstance(self.raw[key], dict) else ""
        return ConfigError(f"{self.at(key.split('.')[0])}: [tasks.{self.name}] {key}{shown}: {msg}")

    def choice(self, key: str, default: str | None, options) -> str:
        value = self.raw.get(key, default)
        if value is None:
            raise self.fail(key, f"missing; give {key} = " + ", ".join(f'"{o}"' for o in options) + ".")
        if value not in options:
            hint = difflib.get_close_matches(str(value), list(options), n=1)
            raise self.fail(key, f"unknown {key}{f' (did you mean {hint[0]!r}?)' if hint else ''}; known: {', '.join(options)}.")
        return value

    def get(self, key: str, typ: type, default):
        value = self.raw.get(key, default)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise self.fail(key, f"must be {_TYPE_NAMES[typ]}.")
        return value

    def splits(self, default: Mapping[str, str], *, lists: bool = False) -> dict[str, Any]:
        given = self.get("splits", dict, {})
        out: dict[str, Any] = dict(default)
        for role, value in given.items():
            if role not in ROLES:
                raise self.fail(f"splits.{role}", "unknown split; splits maps train and test.")
            values = value if lists and isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str) and v for v in values):
                raise self.fail(f"splits.{role}", "must be a non-empty string" + (" or a list of them." if lists else "."))
            out[role] = values if lists else value
        if lists:
            out = {r: list(v) if isinstance(v, list) else [v] for r, v in out.items()}
            shared = set(out["train"]) & set(out["test"])
            if shared:
                raise self.fail("splits", f"{sorted(shared)[0]!r} is both a train and a test value.")
        return out


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", dict: "a table, e.g. {train = ..., test = ...}"}


def parse(name: str, raw: Mapping[str, Any], base: Path, at: Callable[[str], str] = lambda key: "<config>") -> Declared:
    """Check a `[tasks.NAME]` table (without registering it)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise ConfigError(f"{at('')}: [tasks.{name}]: a task name is letters, digits, '-' and '_'.")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{at('')}: tasks.{name} must be a table: [tasks.{name}] with layout, data, probe, metric.")
    t = _Table(name, raw, at)
    layout = t.choice("layout", None, LAYOUTS)
    allowed = (*COMMON_KEYS, *LAYOUT_KEYS[layout])
    for key in raw:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            raise t.fail(
                key, f'unknown key{f" (did you mean {hint[0]!r}?)" if hint else ""}; keys for layout = "{layout}": {", ".join(allowed)}.'
            )
    settings = _layout_settings(t, layout)
    reid = layout == "coco" and settings["json"] is not None
    probe_cls = (REID_PROBES if reid else PROBES)[t.choice("probe", "knn" if reid else "ridge", REID_PROBES if reid else PROBES)]
    metric = t.choice("metric", "top1" if reid else "accuracy", REID_METRICS if reid else METRICS)
    kind = t.choice("kind", "re-identification" if reid else "classification", KINDS)
    version = t.get("version", int, 1)
    if version < 1:
        raise t.fail("version", "must be 1 or more.")
    data = t.get("data", str, "")
    if "data" in raw and not data:
        raise t.fail("data", "is empty; give the dataset directory (or leave data out and name it under [data]).")
    path = Path(data).expanduser() if data else None
    return Declared(
        name, layout, None if path is None else (path if path.is_absolute() else base / path),
        _probe(t, probe_cls), metric, kind, version, t.get("citation", str, ""), settings,
    )  # fmt: skip


def _layout_settings(t: _Table, layout: str) -> dict[str, Any]:
    if layout == "folders":
        return {"splits": t.splits({"train": "train", "test": "test"})}
    if layout == "csv":
        columns = {"file": "file", "label": "label", "split": "split"}
        for key, value in t.get("columns", dict, {}).items():
            if key not in columns:
                raise t.fail(f"columns.{key}", "unknown; columns names the file, label and split columns.")
            if not isinstance(value, str) or not value:
                raise t.fail(f"columns.{key}", "must be a column name.")
            columns[key] = value
        separator = t.get("separator", str, ",")
        if len(separator) != 1:
            raise t.fail("separator", "must be one character.")
        return {"csv": t.get("csv", str, "labels.csv"), "images": t.get("images", str, "."), "columns": columns,
                "splits": t.splits({"train": "train", "test": "test"}, lists=True), "separator": separator}  # fmt: skip
    if ("json" in t.raw) == ("splits" in t.raw):
        raise t.fail("splits", "give either splits = {train = JSON, test = JSON} (classification) or json = JSON (re-identification).")
    json_file = t.get("json", str, "") or None
    roles = ("test",) if json_file else ROLES
    images = t.raw.get("images", ".")
    if isinstance(images, str):
        images = dict.fromkeys(roles, images)
    if not isinstance(images, dict) or set(images) != set(roles) or not all(isinstance(v, str) for v in images.values()):
        raise t.fail("images", "must be a folder, or {train = DIR, test = DIR}." if not json_file else "must be a folder.")
    label = t.choice("label", "name" if json_file else "category", ("category", "name"))
    if json_file and label != "name":
        raise t.fail("label", 're-identification (json = ...) matches individuals: label is the annotation\'s "name".')
    splits = None if json_file else t.splits({})
    if splits is not None and set(splits) != set(ROLES):
        raise t.fail("splits", "needs both train and test JSON files.")
    return {"splits": splits, "json": json_file, "images": images, "label": label, "crop": t.get("crop", bool, False)}


def _probe(t: _Table, cls: type[Probe]) -> Probe:
    given = t.get("probe_options", dict, {})
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in given.items():
        if key not in fields:
            raise t.fail(
                f"probe_options.{key}", f"not an option of probe {cls.short_name!r}; its options: {', '.join(sorted(fields)) or 'none'}."
            )
        ok, converted = _check(value, hints[key])
        if not ok:
            raise t.fail(f"probe_options.{key}", f"must be {_describe(hints[key])}; got {value!r}.")
        kwargs[key] = converted
    return cls(**kwargs)


def _check(value, typ) -> tuple[bool, Any]:
    """Whether a TOML value fits a probe field's annotation, and the value converted (lists to tuples)."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        return next((r for r in (_check(value, a) for a in args if a is not type(None)) if r[0]), (False, None))
    if origin is Literal:
        return value in args, value
    if origin is tuple:
        parts = [_check(v, a) for v, a in zip(value, args)] if isinstance(value, list) and len(value) == len(args) else [(False, None)]
        return all(ok for ok, _ in parts), tuple(v for _, v in parts)
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), value
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, typ), value


def _describe(typ) -> str:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} " + " / ".join(_describe(a) for a in args)
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string"}.get(typ, str(typ))


###########
# Reading #
###########


def _need(decl: Declared, data: Path, key: str, rel: str, *, folder: bool) -> Path:
    path = data / rel
    if not (path.is_dir() if folder else path.is_file()):
        raise DataError(
            f"{decl.name}: [tasks.{decl.name}] {key} = {rel!r}: {'folder' if folder else 'file'} {path} not found; "
            f"check the table's {key} and data (= {data})."
        )
    return path


def _reader(decl: Declared) -> Callable[[Options], Examples]:
    s = decl.settings

    def read(options: Options) -> Examples:
        """Examples of the declared layout (see the module docstring)."""
        data = Path(options.data)
        if not data.is_dir():
            raise DataError(f"{decl.name}: data directory {data} not found; check [tasks.{decl.name}] data (or [data] {decl.name}).")
        if decl.layout == "folders":
            for role, folder in s["splits"].items():
                _need(decl, data, f"splits.{role}", folder, folder=True)
            return read_class_folders(decl.name, data, s["splits"])
        if decl.layout == "csv":
            table, images = _need(decl, data, "csv", s["csv"], folder=False), _need(decl, data, "images", s["images"], folder=True)
            col = s["columns"]
            splits = {value: role for role, values in s["splits"].items() for value in values}
            return read_examples(decl.name, data, table, images, image=col["file"], label=col["label"], split=col["split"], splits=splits,
                                 separator=s["separator"])  # fmt: skip
        key = "images" if len(set(s["images"].values())) == 1 else "images.{}"
        images = {r: _need(decl, data, key.format(r), d, folder=True) for r, d in s["images"].items()}
        if decl.reid:
            return read_reid(decl.name, data, _need(decl, data, "json", s["json"], folder=False), images["test"], crop=s["crop"])
        return _read_coco_classes(decl, data, images)

    return read


def _read_coco_classes(decl: Declared, data: Path, images: Mapping[str, Path]) -> Examples:
    """One example per annotation of the train and test JSON files; class = its category (or name)."""
    s = decl.settings
    ids, paths, crops, names, roles = [], [], [], [], []
    for role in ROLES:
        json_path = _need(decl, data, f"splits.{role}", s["splits"][role], folder=False)
        anns = read_coco(decl.name, data, json_path, images[role], crop=s["crop"])
        field = "category_id" if s["label"] == "category" else "name"
        for a in anns:
            if (a.category if s["label"] == "category" else a.name) is None:
                raise DataError(f"{decl.name}: {json_path}: annotation {a.id} has no {field!r} (its class); give every annotation one.")
        if not s["crop"]:
            seen: dict[Path, str] = {}
            for a in anns:
                if a.path in seen:
                    raise DataError(
                        f"{decl.name}: {json_path}: annotations {seen[a.path]} and {a.id} are on one image ({a.path.name}); "
                        f"set crop = true in [tasks.{decl.name}] to use each annotation's bbox, or keep one annotation per image."
                    )
                seen[a.path] = a.id
        require_files(decl.name, [a.path for a in anns], [f"annotation {a.id}" for a in anns], json_path)
        ids += [f"{role}/{a.id}" for a in anns]
        paths += [a.path for a in anns]
        crops += [a.crop for a in anns]
        names += [a.category if s["label"] == "category" else a.name for a in anns]
        roles += [role] * len(anns)
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    imageset = ImageSet(decl.name, ids, paths, crops=crops if s["crop"] else None)
    return one_per_image(imageset, [index[n] for n in names], roles, classnames={"": tuple(classes)})


############
# Fixture  #
############

FIXTURE_CLASSES = ("finch", "robin", "sparrow", "wren")
"""Classes of a classification fixture: 8 training and 5 test images each."""
FIXTURE_INDIVIDUALS = 12
"""Individuals of a re-identification fixture, 4 photos each."""


def _fixture(decl: Declared) -> Callable[..., None]:
    s = decl.settings

    def make_fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
        """A small generated dataset in this table's layout and names, each class (or individual) its own colour and stripes.

        With `shuffle_labels`, labels are permuted within each split after drawing, so no image carries its label's signal.
        """
        rng, root = np.random.default_rng(seed), Path(root)
        if decl.reid:
            items = [("test", i) for i in range(FIXTURE_INDIVIDUALS) for _ in range(4)]
            names = [f"individual-{i:02d}" for i in range(FIXTURE_INDIVIDUALS)]
        else:
            items = [(role, c) for role, n in (("train", 8), ("test", 5)) for c in range(len(FIXTURE_CLASSES)) for _ in range(n)]
            names = list(FIXTURE_CLASSES)
        images = [fixtures.draw(rng, 1100, c, strength=0.75) for _, c in items]
        roles, labels = np.array([r for r, _ in items]), np.array([c for _, c in items])
        if shuffle_labels:
            for role in ROLES:
                rows = np.flatnonzero(roles == role)
                labels[rows] = labels[rng.permutation(rows)]
        rows = [(k, str(r), names[c], img) for k, (r, c, img) in enumerate(zip(roles, labels, images))]
        if decl.layout == "folders":
            for k, role, name, img in rows:
                fixtures.save_jpeg(img, root / s["splits"][role] / name / f"IMG_{k:04d}.jpg")
        elif decl.layout == "csv":
            col = s["columns"]
            out = [[col["file"], col["label"], col["split"]]]
            for k, role, name, img in rows:
                fixtures.save_jpeg(img, root / s["images"] / f"{role}/IMG_{k:04d}.jpg")
                out.append([f"{role}/IMG_{k:04d}.jpg", name, s["splits"][role][0]])
            (root / s["csv"]).parent.mkdir(parents=True, exist_ok=True)
            with open(root / s["csv"], "w", newline="") as f:
                csv.writer(f, delimiter=s["separator"]).writerows(out)
        else:
            _write_coco(decl, root, rows, names, rng)

    return make_fixture


def _write_coco(decl: Declared, root: Path, rows: list, names: list[str], rng: np.random.Generator) -> None:
    """COCO JSON per split (or one, for re-identification); with crop, each image is pasted into a larger noisy photo at its bbox."""
    s = decl.settings
    docs: dict[str, dict] = {}
    for k, role, name, img in rows:
        doc = docs.setdefault(role, {"images": [], "annotations": [], "categories": []})
        if s["crop"]:
            canvas = Image.fromarray(rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8))
            x, y = int(rng.integers(0, 128 - img.width)), int(rng.integers(0, 96 - img.height))
            canvas.paste(img, (x, y))
            box, img = [x, y, img.width, img.height], canvas
        else:
            box = [0, 0, img.width, img.height]
        file_name = f"{k:06d}.jpg"
        h, w = fixtures.save_jpeg(img, root / s["images"][role] / file_name)
        category = 0 if decl.reid else names.index(name)
        doc["images"].append({"id": k, "file_name": file_name, "width": w, "height": h})
        doc["annotations"].append({"id": k, "image_id": k, "category_id": category, "bbox": box, "iscrowd": 0, "name": name})
    for role, doc in docs.items():
        doc["categories"] = [{"id": 0, "name": "animal"}] if decl.reid else [{"id": i, "name": n} for i, n in enumerate(names)]
        path = root / (s["json"] if decl.reid else s["splits"][role])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1))
