"""`TaskSpec`: a task as a declaration.

A task module is a short recipe: its options dataclass, a layout reader that returns
`Examples`, and a spec naming its probe, metric, preprocessing, fixture, download and
citation, registered with `biobench.tasks.register_task`. The routes
(`biobench.routes`) do the rest: sampling `n_train`, fitting a probe per sub-task,
prompting an MLLM with the same examples, intervals, sub-scores and the stored report.
A task never loads a model or opens the results database.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from biobench import preprocess
from biobench.download import Resource
from biobench.errors import DataError
from biobench.examples import Examples
from biobench.metrics import ACCURACY, Metric
from biobench.probes import Probe
from biobench.sampling import Repeats

KINDS = ("classification", "re-identification", "traits", "behaviour", "detection", "retrieval")
"""What a task asks of a model, as `biobench tasks` lists it."""
ROUTES = ("probe", "mllm", "text")
"""Routes a task can declare: 'probe' (frozen features + a probe), 'mllm' (prompting a multimodal LLM),
'text' (image features against a CLIP-style text tower: zero-shot classification, retrieval, re-ranking)."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything biobench needs to know about a task."""

    name: str
    """Registry name, also its `[data]` key and its `[NAME]` options table."""
    version: int
    """Bumped whenever the protocol changes what a score means (part of every experiment key)."""
    citation: str
    """BibTeX of the dataset / protocol."""
    options: type
    """Frozen dataclass: `data` (the dataset directory) plus the task's knobs, from the config's `[NAME]` table."""
    read: Callable[[Any], Examples]
    """Layout reader: options -> Examples (raises `DataError` naming the file and item at fault)."""
    fixture: Callable[..., None]
    """`fixture(root, *, seed, shuffle_labels)`: a small generated dataset in the real on-disk layout."""
    resources: tuple[Resource, ...] = ()
    """Files the dataset is downloaded as (`biobench download`), each unpacked into the data directory."""
    download: Callable[[Path], None] | None = None
    """Optional last download step, run after `resources` (e.g. fetch images a downloaded CSV lists)."""
    probe: Probe | Callable[[Any], Probe] | None = None
    """The probe, or options -> probe when a knob picks it."""
    metric: Metric = ACCURACY
    """Headline metric, its resampling and breakdown."""
    preprocess: tuple[str, ...] = ()
    """Named feature steps (`biobench.preprocess`), fitted per sub-task on its training rows."""
    headline: str | None = None
    """The sub-task whose score is the headline (None: all test examples pooled)."""
    routes: tuple[str, ...] = ("probe",)
    """What the task can evaluate: 'probe', 'mllm', 'text'."""
    text: Callable[..., Any] | None = None
    """The text route's evaluation, `text(options, examples, image_features, encode, ctx) -> TaskReport` (`encode`:
    texts -> normalised, cached text embeddings); None = zero-shot classification with the class names
    (`biobench.routes.text`)."""
    mllm: Callable[..., Any] | None = None
    """The MLLM route's evaluation, `mllm(options, examples, client, ctx) -> TaskReport` (`client`: a
    `biobench.mllm.client.Client`); None = the probe route's sub-tasks as classification prompts (`biobench.routes.mllm`)."""
    text_names: Callable[[Any, Examples], Any] | None = None
    """Zero-shot's class names, `text_names(options, examples) -> {sub-task: names by label}` (a name form the
    options choose: scientific, common, taxonomic...); None = `Examples.classnames`. Either way the text route reads
    underscores as spaces (`routes.text.readable`)."""
    evaluate: Callable[..., Any] | None = None
    """Escape hatch: `evaluate(options, examples, features, ctx) -> TaskReport` replaces the probe route's loop."""
    uses_n_train: bool = True
    """False for tasks without a training set to shrink (leave-one-out re-identification): they run once, at n_train = -1."""
    kind: str = "classification"
    """One of `KINDS`: classification, re-identification, traits, behaviour, detection, retrieval."""
    definition: str = ""
    """A hash of the task's definition where it is data, not code (a config's `[tasks.NAME]` table,
    `biobench.tasks.user`): part of the protocol id, so two different tables never share a result."""
    repeats: Callable[[Any], Repeats] | None = None
    """Few-shot protocols: options -> `Repeats` (n draws of k training examples per class, each scored on the same
    test rows; the interval resamples draws and test examples crossed). Replaces `n_train`, so `uses_n_train=False`."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or "|" in self.name:
            raise ValueError(f"Task name {self.name!r} must be non-empty and contain no '/' or '|'.")
        if not dataclasses.is_dataclass(self.options) or "data" not in {f.name for f in dataclasses.fields(self.options)}:
            raise TypeError(f"Task {self.name}: options must be a dataclass with a `data` field.")
        if self.kind not in KINDS:
            raise ValueError(f"Task {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}.")
        unknown = [r for r in self.routes if r not in ROUTES]
        if unknown:
            raise ValueError(f"Task {self.name}: unknown route(s) {unknown}; known: {', '.join(ROUTES)}.")
        if "probe" in self.routes and self.probe is None and self.evaluate is None:
            raise ValueError(f"Task {self.name}: the probe route needs a probe or a custom evaluate.")
        if self.repeats is not None and self.uses_n_train:
            raise ValueError(f"Task {self.name}: repeats draw their own k-shot training sets; declare uses_n_train=False.")
        preprocess.check(self.preprocess, f"Task {self.name}")

    @property
    def summary(self) -> str:
        """First line of the defining module's docstring."""
        module = sys.modules.get(self.read.__module__)
        lines = ((module.__doc__ if module else None) or "").strip().splitlines()
        return lines[0] if lines else ""

    def probe_for(self, options) -> Probe:
        """The probe these options select."""
        if isinstance(self.probe, Probe):
            return self.probe
        if self.probe is None:
            raise ValueError(f"Task {self.name} has no probe.")
        return self.probe(options)

    def supports(self, route: str) -> bool:
        return route in self.routes

    @property
    def downloadable(self) -> bool:
        return bool(self.resources) or self.download is not None

    def fetch(self, root: Path, resources: tuple[Resource, ...] | None = None) -> None:
        """Download the dataset into `root`: the resources (or `resources`, e.g. a local mirror), then `download`."""
        from biobench.download import check_members, fetch_resources

        if not self.downloadable:
            raise DataError(f"biobench cannot download {self.name} yet; see the task's documentation for where to get it.")
        resources = self.resources if resources is None else resources
        fetch_resources(self.name, Path(root), resources)
        if self.download is not None:
            self.download(Path(root))
        check_members(self.name, Path(root), resources)
