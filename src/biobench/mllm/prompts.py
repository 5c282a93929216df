"""Prompts for classification by a multimodal LLM, and parsing its answers.

A request shows `k` in-context examples (image + question + the right answer in bold),
then the query image and the question. "single" puts everything in one user turn (as
small_data_metrics' single-turn mode); "multi" gives each example its own user turn and
the answer as an assistant turn. Images are shrunk to a maximum side and sent as
base64 JPEG data URLs.

Fixes of the seeds: the question's class order is drawn from a generator seeded by
(seed, example id), not from one shared generator advanced in whatever order async
requests complete, so a rerun sends byte-identical prompts (and the answer cache hits);
the bold answer is searched anywhere in the text, not only at its start; answers are
mapped to the task's human-readable class names, not to its raw text labels.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import io
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from biobench.images import Crop, load_rgb

Prompting = Literal["single", "multi"]

TOKEN_MARGIN = 32
"""Tokens kept free beyond the answer's budget: per-message overheads the piecewise count misses."""


@dataclasses.dataclass(frozen=True)
class Shot:
    """One in-context example: an image (data URL) and its class name."""

    image_url: str
    answer: str


def encode_image(path: Path, crop: Crop | None = None, max_side: int = 512) -> str:
    """The image as a `data:image/jpeg;base64,...` URL, shrunk so its longer side is at most `max_side`."""
    img = load_rgb(path, crop)
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def example_rng(seed: int, example_id: str) -> np.random.Generator:
    """A generator for one test example's prompt, independent of every other example and of timing."""
    return np.random.default_rng([seed, zlib.crc32(example_id.encode())])


def question(classnames: Sequence[str], rng: np.random.Generator) -> str:
    """Ask for one of `classnames`, listed in a random order (so position carries no hint)."""
    names = [classnames[i] for i in rng.permutation(len(classnames))]
    if len(names) == 2:
        listed = f"'{names[0]}' or '{names[1]}'"
    else:
        listed = ", ".join(f"'{n}'" for n in names[:-1]) + f" or '{names[-1]}'"
    return f"What is this a picture of, {listed}? Respond with your answer in bold."


def bold(answer: str) -> str:
    return f"**{answer}**"


def messages(shots: Sequence[Shot], image_url: str, text: str, mode: Prompting) -> list[dict]:
    """Chat-completions messages: the shots, then the query image and question."""
    if mode == "single":
        content: list[dict] = []
        for shot in shots:
            content.append({"type": "image_url", "image_url": {"url": shot.image_url}})
            content.append({"type": "text", "text": f"{text}\n{bold(shot.answer)}"})
        content.append({"type": "image_url", "image_url": {"url": image_url}})
        content.append({"type": "text", "text": text})
        return [{"role": "user", "content": content}]
    if mode == "multi":
        out: list[dict] = []
        for shot in shots:
            out.append(
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": shot.image_url}}, {"type": "text", "text": text}]}
            )
            out.append({"role": "assistant", "content": bold(shot.answer)})
        out.append({"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": text}]})
        return out
    raise ValueError(f"Unknown prompting mode {mode!r}; use 'single' or 'multi'.")


def n_images(msgs: Sequence[dict]) -> int:
    """Images in a list of messages."""
    return sum(1 for m in msgs if isinstance(m["content"], list) for part in m["content"] if part.get("type") == "image_url")


def count_tokens(msgs: Sequence[dict], model: str) -> int:
    """Input tokens of `msgs` as litellm counts them (OpenAI's tokenizer and image-tile formula)."""
    from biobench.mllm.litellm_setup import litellm

    return int(litellm().token_counter(model=model, messages=list(msgs)))


def shot_tokens(shots: Sequence[Shot], text: str, mode: Prompting, model: str, probe_url: str) -> list[int]:
    """Tokens each shot adds to a prompt (counted once per shot, then summed: fitting is O(k), not O(k^2))."""
    base = count_tokens(messages([], probe_url, text, mode), model)
    return [count_tokens(messages([s], probe_url, text, mode), model) - base for s in shots]


def n_fitting(query_tokens: int, per_shot: Sequence[int], context_tokens: int, max_output_tokens: int) -> int:
    """How many leading shots fit in the context window with the query and room for the answer."""
    free = context_tokens - max_output_tokens - TOKEN_MARGIN - query_tokens
    if free < 0:
        return -1  # not even the query fits
    used = np.cumsum(np.asarray(per_shot, dtype=np.int64))
    return int(np.searchsorted(used, free, side="right"))


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s'-]", " ", s.lower())).strip()


def _closest(text: str, classnames: Sequence[str]) -> tuple[int, float]:
    """(index, similarity in [0, 1]) of the class name closest to `text`."""
    normed = [_norm(c) for c in classnames]
    t = _norm(text)
    if t in normed:
        return normed.index(t), 1.0
    ratios = [difflib.SequenceMatcher(None, t, c).ratio() for c in normed]
    best = int(np.argmax(ratios))
    return best, float(ratios[best])


CLOSE_ENOUGH = 0.6
"""Similarity at which a bold phrase counts as naming a class (typos, plurals, articles)."""


def _mentioned(text: str, classnames: Sequence[str]) -> list[int]:
    """Classes whose name occurs in `text` as whole words, dropping names contained in a longer match."""
    t = f" {_norm(text)} "
    hits = [i for i, c in enumerate(classnames) if f" {_norm(c)} " in t]
    return [i for i in hits if not any(j != i and _norm(classnames[i]) in _norm(classnames[j]) for j in hits)]


def parse_answer(text: str | None, classnames: Sequence[str]) -> tuple[int | None, bool]:
    """(class index, parsed cleanly) for an answer.

    A bold phrase (the last one that names a class, so "not **A** but **B**" reads B) is
    mapped to the class it names or resembles: parsed. Otherwise a text naming exactly one
    class is parsed too. Failing both, the class closest to the answer is taken and the
    parse counts as failed. An empty answer predicts nothing.
    """
    if not text or not text.strip():
        return None, False
    found = re.findall(r"\*\*(.+?)\*\*", text, flags=re.DOTALL)
    for phrase in reversed(found):  # e.g. "**Answer:** merlin" has a bold phrase that names nothing
        named = _mentioned(phrase, classnames)
        best, similarity = _closest(phrase, classnames)
        if similarity == 1.0 or len(named) != 1 and similarity >= CLOSE_ENOUGH:
            return best, True
        if len(named) == 1:
            return named[0], True
    named = _mentioned(text, classnames)
    if len(named) == 1:
        return named[0], True
    return _closest(found[-1] if found else text, classnames)[0], False
