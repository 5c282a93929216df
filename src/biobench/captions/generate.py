"""Captions for webdataset shards: per image, a VLM prompt with the taxon's Wikipedia description and format examples.

For each sample of each shard (KEY = uuid), the prompt (`prompts/caption.txt`) carries the
species' name, the format examples of its class (BioCAP's `format_examples`: class, description;
`prompts/default_examples.txt` for a class without any) and its filtered description from
`biobench wiki filter` (matched by all seven ranks, else by a binomial only one taxon has), cut
to `max_description_chars`. The image is shrunk to `max_image_side` and sent as a data URL.

Output, in the TreeOfLife-10M-Captions layout:

- `OUT/uuid_caption_description/SHARD.parquet`: uuid, caption, description, one row per captioned
  sample, written when the shard is finished (read them all with `polars.read_parquet(".../*.parquet")`);
- `OUT/progress/SHARD.jsonl`: one line per sample as its answer arrives (uuid, caption or error,
  tokens, cost, whether the answer came from the cache), so a rerun sends only samples without a
  caption; `OUT/progress/SHARD.done.json`: the shard's counts, tokens and cost once finished;
- `OUT/answers.sqlite`: the answer cache (`biobench.mllm.client`): nothing is paid twice.

Shards are split between Slurm array jobs by `job_share` (shard i goes to job i mod N) and, within a
job, `shard_workers` shards are read at once, their requests sharing the model's limits.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from biobench.captions import jsonl
from biobench.captions.shards import check_tar, expand_braces, iter_samples, sample_ranks, text_field
from biobench.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def expand_shards(patterns: str) -> list[Path]:
    """Shard paths of space-separated, brace-expanded patterns, in order, without repeats."""
    paths = [Path(p) for pattern in patterns.split() for p in expand_braces(pattern)]
    if not paths:
        raise ConfigError("--shards names no shard; give e.g. 'data/shard-{000000..000159}.tar'.")
    return list(dict.fromkeys(paths))


def job_share(index: int | None, count: int | None) -> tuple[int, int]:
    """(this job's index, number of jobs), from the options or Slurm's array variables."""
    env = os.environ
    if index is None and "SLURM_ARRAY_TASK_ID" in env:
        index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        count = count or int(env.get("SLURM_ARRAY_TASK_COUNT", "1"))
    index, count = index or 0, count or 1
    if not 0 <= index < count:
        raise ConfigError(f"--job-index {index} is not in 0..{count - 1} (--num-jobs {count}).")
    return index, count


def read_examples(path: Path | None) -> dict[str, str]:
    """Class name (lower case) -> format examples, from a CSV or parquet with columns class, description."""
    if path is None:
        return {}
    if path.is_dir():
        found = [path / n for n in ("format_examples.parquet", "format_example.parquet", "format_examples.csv", "format_example.csv")
                 if (path / n).exists()]  # fmt: skip
        if not found:
            raise DataError(f"{path} holds no format_examples.parquet or format_examples.csv (columns class, description).")
        path = found[0]
    import polars as pl

    try:
        df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    except Exception as err:
        raise DataError(f"Cannot read the format examples {path}: {err}") from None
    missing = {"class", "description"} - set(df.columns)
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(sorted(missing))}; format examples need class, description.")
    return {str(c).strip().lower(): str(d).strip() for c, d in zip(df["class"], df["description"]) if c and d and str(d).strip()}


class Descriptions:
    """Filtered Wikipedia descriptions by 7-rank key, and by binomial where only one taxon has it."""

    def __init__(self, wiki: Path | None):
        from biobench.captions.taxa import RANKS

        self.by_ranks: dict[tuple, str] = {}
        by_binomial: dict[str, list[str]] = {}
        if wiki is not None:
            path = wiki / "descriptions.jsonl"
            if not path.exists():
                raise DataError(f"{path} does not exist: run `biobench wiki filter --out {wiki}` first (or point --wiki at its output).")
            for r in jsonl.read_lines(path):
                if r.get("status") == "ok" and r.get("description"):
                    self.by_ranks[tuple(r["ranks"].get(k, "") for k in RANKS)] = r["description"]
                    by_binomial.setdefault(r["binomial"], []).append(r["description"])
        self.by_binomial = {b: d[0] for b, d in by_binomial.items() if len(d) == 1}
        self._ranks = RANKS

    def find(self, ranks: dict[str, str], binomial: str) -> str:
        key = tuple(ranks.get(k, "") for k in self._ranks)
        return self.by_ranks.get(key) or self.by_binomial.get(binomial, "")


def image_url(data: bytes, max_side: int) -> str:
    """A JPEG data URL of the image, shrunk to `max_side` (a small JPEG is sent as it is)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        if max(img.size) <= max_side and img.format == "JPEG":
            return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        img = img.convert("RGB")
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render(template: str, *, description: str, **values: str) -> str:
    """Fill the caption prompt; the lines between `[[if description]]` and `[[end]]` are kept only with a description."""
    from biobench.captions.llm import fill

    out, keep = [], True
    for line in template.splitlines():
        if line.strip() == "[[if description]]":
            keep = bool(description)
            continue
        if line.strip() == "[[end]]":
            keep = True
            continue
        if keep:
            out.append(line)
    return fill("\n".join(out).strip() + "\n", description=description, **values)


@dataclasses.dataclass
class ShardState:
    path: Path
    name: str
    done: set[str]
    progress: jsonl.Appender | None = None
    in_flight: int = 0
    exhausted: bool = False
    finished: bool = False
    error: str | None = None


@dataclasses.dataclass
class GenerateSummary:
    out: Path
    shards: int = 0
    skipped_shards: int = 0
    finished_shards: int = 0
    failed_shards: list[str] = dataclasses.field(default_factory=list)
    statuses: Counter = dataclasses.field(default_factory=Counter)
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    budget_stopped: bool = False

    def line(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        text = (f"captions: {self.shards} shard(s) for this job, {self.skipped_shards} already done, {self.finished_shards} finished now; "
                f"samples: {counts or 'none new'}; this run ${self.cost_usd:.4f}, {self.input_tokens:,} in / {self.output_tokens:,} out tokens")  # fmt: skip
        if self.failed_shards:
            text += "; unreadable: " + "; ".join(self.failed_shards)
        return text + ("; budget reached (rerun to resume)" if self.budget_stopped else "")


def _progress_lines(path: Path) -> dict[str, dict]:
    return {r["uuid"]: r for r in jsonl.read_lines(path)}


def generate(shards: list[Path], out: Path, model, *, wiki: Path | None = None, examples: Path | None = None, prompt: Path | None = None,
             shard_workers: int = 2, job: tuple[int, int] = (0, 1), word_limit: int = 20, max_description_chars: int = 600,
             max_image_side: int = 512, max_usd: float | None = None) -> GenerateSummary:  # fmt: skip
    """Caption every sample of this job's shards that has no caption yet; see the module docstring."""
    from biobench.captions.llm import open_client, read_prompt, stream
    from biobench.mllm.client import BudgetExhausted
    from biobench.progress import Progress

    index, count = job
    mine = shards[index::count]
    names = [p.name.removesuffix(".gz").removesuffix(".tar") for p in mine]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"Shards in different directories share the name(s) {', '.join(dupes)}; their outputs would collide.")
    for p in mine:
        check_tar(p)
    template = read_prompt(prompt, "caption.txt")
    default_examples = read_prompt(None, "default_examples.txt").strip()
    class_examples = read_examples(examples)
    descriptions = Descriptions(wiki)
    summary = GenerateSummary(out, shards=len(mine))
    (out / "progress").mkdir(parents=True, exist_ok=True)
    (out / "uuid_caption_description").mkdir(parents=True, exist_ok=True)

    states = []
    for path, name in zip(mine, names):
        done_file = out / "progress" / f"{name}.done.json"
        if done_file.exists() and json.loads(done_file.read_text()).get("failures") == 0:
            summary.skipped_shards += 1
            continue
        lines = _progress_lines(out / "progress" / f"{name}.jsonl")
        states.append(ShardState(path, name, {u for u, r in lines.items() if r.get("caption")}))
    bar = Progress(len(states), "captions", "shards")

    def finish(state: ShardState) -> None:
        if state.finished or not state.exhausted or state.in_flight:
            return
        state.finished = True
        if state.progress is not None:
            state.progress.close()
        if state.error:
            summary.failed_shards.append(state.error)
            return
        import polars as pl

        lines = _progress_lines(out / "progress" / f"{state.name}.jsonl")
        rows = [r for r in lines.values() if r.get("caption")]
        table = pl.DataFrame({"uuid": [r["uuid"] for r in rows], "caption": [r["caption"] for r in rows],
                              "description": [r.get("description") or "" for r in rows]}, schema={"uuid": pl.String, "caption": pl.String, "description": pl.String})  # fmt: skip
        part = out / "uuid_caption_description" / f"{state.name}.parquet"
        table.write_parquet(part.with_suffix(".tmp"))
        part.with_suffix(".tmp").replace(part)
        info = {"shard": str(state.path), "samples": len(lines), "captions": len(rows), "failures": len(lines) - len(rows),
                "input_tokens": sum(r.get("input_tokens", 0) for r in lines.values()), "output_tokens": sum(r.get("output_tokens", 0) for r in lines.values()),
                "cost_usd": sum(r.get("cost_usd") or 0.0 for r in lines.values()), "model": model.name,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        (out / "progress" / f"{state.name}.done.json").write_text(json.dumps(info, indent=2) + "\n")
        summary.finished_shards += 1
        bar.update()
        logger.info("shard %s: %d captions, %d failures, $%.4f.", state.name, info["captions"], info["failures"], info["cost_usd"])

    def samples_of(state: ShardState) -> Iterator[tuple[ShardState, dict]]:
        state.progress = jsonl.Appender(out / "progress" / f"{state.name}.jsonl")
        try:
            for sample in iter_samples(state.path):
                if sample["__key__"] not in state.done:
                    state.in_flight += 1
                    yield state, sample
        except DataError as err:
            state.error = str(err)
            logger.error("%s", err)
        state.exhausted = True
        finish(state)

    def interleaved() -> Iterator[tuple[ShardState, dict]]:
        """Round-robin over `shard_workers` open shards, opening the next as one ends."""
        queue = iter(states)
        active = [samples_of(s) for s in (next(queue, None) for _ in range(max(1, shard_workers))) if s is not None]
        while active:
            for gen in list(active):
                item = next(gen, None)
                if item is None:
                    active.remove(gen)
                    nxt = next(queue, None)
                    if nxt is not None:
                        active.append(samples_of(nxt))
                    continue
                yield item

    prepared: dict[int, tuple[str, str]] = {}

    def build(item):
        state, sample = item
        ranks = sample_ranks(sample)
        scientific = text_field(sample, "scientific_name.txt") or f"{ranks.get('genus', '')} {ranks.get('species', '')}".strip()
        name = text_field(sample, "common_name.txt") or scientific
        description = descriptions.find(ranks, scientific)[:max_description_chars]
        examples_text = class_examples.get(ranks.get("class", "").lower(), default_examples)
        prepared[id(item)] = (description, "")
        if "jpg" not in sample:
            prepared[id(item)] = (description, f"sample has no jpg (fields: {', '.join(k for k in sample if k != '__key__')})")
            return None
        try:
            url = image_url(sample["jpg"], max_image_side)
        except Exception as err:  # PIL raises many types for bad bytes
            prepared[id(item)] = (description, f"image cannot be decoded: {err}")
            return None
        text = render(template, description=description, name=name, scientific_name=scientific or name, examples=examples_text,
                      word_limit=str(word_limit))  # fmt: skip
        return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}]

    def on_answer(item, answer) -> None:
        state, sample = item
        description, problem = prepared.pop(id(item))
        line = {"uuid": sample["__key__"], "caption": None, "description": description, "error": problem or None,
                "input_tokens": 0, "output_tokens": 0, "cost_usd": None, "cached": False}  # fmt: skip
        if answer is not None:
            caption = " ".join((answer.text or "").split())
            line.update(caption=caption or None, error=answer.error or (None if caption else "empty answer"), input_tokens=answer.input_tokens,
                        output_tokens=answer.output_tokens, cost_usd=answer.cost_usd, cached=answer.cached)  # fmt: skip
            if not answer.cached:
                summary.cost_usd += answer.cost_usd or 0.0
                summary.input_tokens += answer.input_tokens
                summary.output_tokens += answer.output_tokens
        summary.statuses["captioned" if line["caption"] else "failed"] += 1
        state.progress.write(line)
        state.in_flight -= 1
        finish(state)

    with open_client(model, out, max_usd) as client:
        try:
            stream(client, interleaved(), build, on_answer)
        except BudgetExhausted as err:
            logger.warning("%s", err)
            summary.budget_stopped = True
        finally:
            bar.close()
            for s in states:
                if s.progress is not None and not s.finished:
                    s.progress.close()
    return summary


def status_table(out: Path) -> str:
    """One row per shard of a caption run: samples, captions, failures, tokens, cost, finished or in progress."""
    progress = out / "progress"
    if not progress.is_dir():
        raise DataError(f"{out} has no progress/ folder: is it the --out of `biobench captions generate`?")
    rows = [("shard", "samples", "captions", "failures", "tokens in/out", "usd", "state")]
    for path in sorted(progress.glob("*.jsonl")):
        name = path.name.removesuffix(".jsonl")
        lines = _progress_lines(path)
        ok = sum(1 for r in lines.values() if r.get("caption"))
        tokens = f"{sum(r.get('input_tokens', 0) for r in lines.values()):,}/{sum(r.get('output_tokens', 0) for r in lines.values()):,}"
        cost = sum(r.get("cost_usd") or 0.0 for r in lines.values())
        state = "finished" if (progress / f"{name}.done.json").exists() else "in progress"
        rows.append((name, str(len(lines)), str(ok), str(len(lines) - ok), tokens, f"{cost:.4f}", state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
