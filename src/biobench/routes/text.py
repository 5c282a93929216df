"""The text route: image features against text-tower embeddings, with no training examples.

A model evaluated with `method = "zero-shot"` in `[[models]]` runs here: its image
features (cached, `biobench.embed`) and the text tower's embeddings of class prompts,
captions or queries (cached, `biobench.text_embed`), both L2-normalised, compared by
cosine similarity. A task joins the route by listing "text" in `TaskSpec.routes`; its
`TaskSpec.text` says what to do (retrieval, re-ranking), and without one the route runs
zero-shot classification:

- every class's prompts are its name in each template (`TEMPLATES`: OpenAI's 80 ImageNet
  templates, or one "a photo of {}."), each prompt embedded and normalised, averaged per
  class and normalised again (CLIP's recipe);
- each test image is given the class of highest cosine similarity (per sub-task, with that
  sub-task's class names); rows of split "train" are not used;
- the score is the task's own metric (`TaskSpec.metric`) with its interval, as the probe
  route computes it (`routes.probe.score`); sub-scores add top-5 accuracy (`metrics`) and
  each class's accuracy (`class`).

The class names come from `TaskSpec.text_names(options, examples)` where a task offers
name forms (iNat21's folder taxonomy, Rare Species' ranks, Pl@ntNet's species without the
author), else from `Examples.classnames`; either way `readable` turns underscores into spaces
(plankton's `Chaetoceros_sp`). So every classification task with class names joins the route
by listing "text" in its routes, and nothing is copied per task.

A class-name list that does not cover the labels, an empty name, or a name that is only an
id (digits: a Pl@ntNet species id, an iWildCam category without a name) is a `DataError`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np
from jaxtyping import Float

from biobench.errors import DataError
from biobench.evaluation import EvalContext, TaskReport
from biobench.examples import NO_SUBTASK, Examples
from biobench.routes.probe import pooled, score
from biobench.tasks.spec import TaskSpec

TextEncoder = Callable[[Sequence[str]], Float[np.ndarray, "n dim"]]
"""texts -> L2-normalised embeddings (cached), what a text-route evaluation is given."""

OPENAI_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.",
    "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.",
    "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.",
    "a photo of the small {}.", "a photo of the weird {}.", "the cartoon {}.", "art of the {}.",
    "a drawing of the {}.", "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.",
    "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.", "a toy {}.",
    "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.",
)  # fmt: skip
"""OpenAI's 80 ImageNet prompt templates (Radford et al. 2021), as BioCLIP and BioCLIP 2 use them for zero-shot;
equal, in order, to open_clip's `zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES` (tests/test_text_route.py checks)."""
assert len(OPENAI_TEMPLATES) == 80

TEMPLATES: dict[str, tuple[str, ...]] = {"openai": OPENAI_TEMPLATES, "single": ("a photo of {}.",)}
"""Template sets a task option (`templates`) may name."""

TOP_K = 5


def class_embeddings(names: Sequence[str], templates: Sequence[str], encode: TextEncoder) -> Float[np.ndarray, "c dim"]:
    """One unit vector per class: its prompts' normalised embeddings averaged, then normalised (CLIP's recipe)."""
    prompts = [t.format(n) for n in names for t in templates]
    emb = np.asarray(encode(prompts), dtype=np.float64).reshape(len(names), len(templates), -1).mean(axis=1)
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norm > 0, norm, 1.0)


def readable(name: str) -> str:
    """A class name as a prompt says it: underscores read as spaces, runs of whitespace as one space."""
    return " ".join(str(name).replace("_", " ").split())


def prompt_names(spec: TaskSpec, options, examples: Examples) -> dict[str, tuple[str, ...]]:
    """Sub-task -> the class names zero-shot prompts with (`TaskSpec.text_names`, else the examples' own), `readable`."""
    raw = spec.text_names(options, examples) if spec.text_names is not None else examples.classnames
    return {k: tuple(readable(n) for n in v) for k, v in raw.items()}


def check_names(task: str, subtask: str, names: Sequence[str], labels: np.ndarray) -> None:
    """A `DataError` unless every label has a (non-empty, distinct) class name."""
    where = f"{task}{f' ({subtask})' if subtask else ''}"
    if not names:
        raise DataError(f"{where}: the dataset gives no class names, and zero-shot classification prompts with them.")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise DataError(
            f"{where}: labels run to {int(labels.max())} but there are {len(names)} class names; "
            "the class-name list does not match the labels (one name per class index, in label order)."
        )
    blank = [i for i, n in enumerate(names) if not str(n).strip()]
    if blank:
        raise DataError(f"{where}: class {blank[0]} has an empty name; every class needs a name to prompt with.")
    ids = [i for i, n in enumerate(names) if str(n).strip().isdigit()]
    if ids:
        raise DataError(
            f"{where}: class {ids[0]} is named only by an id ({names[ids[0]]!r}; {len(ids)} such); zero-shot prompts need "
            "the class's name: add the dataset's names file (see the task's documentation)."
        )


def zero_shot(
    spec: TaskSpec, options, examples: Examples, features: Float[np.ndarray, "n d"], encode: TextEncoder, ctx: EvalContext
) -> TaskReport:
    """Zero-shot classification of the test rows (see the module docstring)."""
    start = time.perf_counter()
    templates = TEMPLATES[getattr(options, "templates", "openai")]
    table, x = pooled(examples, features)
    x = np.asarray(x, dtype=np.float64)
    x = x / np.where((n := np.linalg.norm(x, axis=1, keepdims=True)) > 0, n, 1.0)
    labels = examples.labels(table)
    split = table["split"].to_numpy()
    subtask = table["subtask"].to_numpy() if "subtask" in table.columns else np.full(table.height, NO_SUBTASK)
    test_rows, preds, top = [], [], []
    per_class: dict[str, dict] = {}
    prompts = prompt_names(spec, options, examples)
    for name in examples.subtasks:
        rows = np.flatnonzero((subtask == name) & (split == "test"))
        if not len(rows):
            continue
        names = list(prompts.get(name) or prompts.get(NO_SUBTASK) or ())
        check_names(spec.name, name, names, labels[rows])
        sims = x[rows] @ class_embeddings(names, templates, encode).T
        names = list(examples.names(name)) or names  # sub-scores keep the dataset's own class names
        order = np.argsort(-sims, axis=1, kind="stable")[:, :TOP_K]
        test_rows.append(rows)
        preds.append(order[:, 0])
        top.append(order)
        for c in np.unique(labels[rows]):
            hit = order[labels[rows] == c, 0] == c
            key = f"{name}/{names[c]}" if name else names[c]
            per_class[key] = {"accuracy": float(hit.mean()), "n_test": int(len(hit))}
    if not test_rows:
        raise DataError(f"{spec.name}: no test examples to classify.")
    rows = np.concatenate(test_rows)
    y_pred = np.concatenate(preds)
    top5 = [t.tolist() for t in np.concatenate(top)]
    extra = [{"top5": t} for t in top5]
    report = score(spec, examples, table[rows], labels[rows], y_pred, None, ctx, extra_info=extra, n_train_actual=0)
    top5_acc = float(np.mean([y in t for y, t in zip(labels[rows], top5)]))
    top1_acc = float(np.mean(labels[rows] == y_pred))
    sub = {**report.sub_scores, "metrics": {"top1_accuracy": top1_acc, f"top{TOP_K}_accuracy": top5_acc}, "class": per_class}
    return dataclasses.replace(report, sub_scores=sub, seconds_score=time.perf_counter() - start)


def evaluate(spec: TaskSpec, options, examples: Examples, features, encode: TextEncoder, ctx: EvalContext) -> TaskReport:
    """One experiment of the text route: the spec's own `text` evaluation, else zero-shot classification."""
    if spec.text is not None:
        return spec.text(options, examples, features, encode, ctx)
    return zero_shot(spec, options, examples, features, encode, ctx)
