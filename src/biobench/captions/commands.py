"""`biobench wiki scrape | filter` and `biobench captions generate | status`: options and thin command functions.

Light to import (dataclasses and tyro only); the work is imported when a command runs.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import tyro

DEFAULT_USER_AGENT = "biobench-captions/0.1 (https://github.com/samuelstevens/biobench; add your contact with --user-agent)"


@dataclasses.dataclass(frozen=True)
class LlmOptions:
    """The model every request goes to (any OpenAI-compatible API: vLLM, Ollama, OpenRouter, OpenAI)."""

    model: Annotated[str, tyro.conf.arg(metavar="ORG:CKPT")]
    """ORG:CKPT, e.g. openai:gpt-4o-mini, or local:OpenGVLab/InternVL3-38B-AWQ with --base-url."""
    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 (Ollama)."""
    api_key_env: str | None = None
    """NAME of the environment variable holding the API key."""
    parallel: int = 8
    """Requests in flight at once."""
    max_rps: float = 4.0
    """Requests started per second, at most (retries included)."""
    context_tokens: int = 32_768
    """Context window of a model biobench's registry does not know."""
    usd_per_m_input: float | None = None
    """Price per million input tokens (for costs and --max-usd); default: the registry's, if any."""
    usd_per_m_output: float | None = None
    """Price per million output tokens."""
    temperature: float = 0.0
    """Sampling temperature (0 makes reruns hit the answer cache and repeat answers)."""
    max_output_tokens: int = 256
    """Most tokens per answer."""
    timeout_s: float = 120.0
    """Seconds to wait for one response."""
    max_retries: int = 5
    """Retries per request after 429, 5xx, timeouts, refused connections."""
    backoff_s: float = 1.0
    """First retry delay (doubles per retry, with jitter; Retry-After honoured)."""
    max_usd: Annotated[float | None, tyro.conf.arg(metavar="USD")] = None
    """Stop cleanly once requests have cost this many US dollars (exit code 3); a rerun resumes."""

    def build(self):
        """The `Model` entry these options describe."""
        from biobench.config import Model
        from biobench.errors import ConfigError
        from biobench.mllm.settings import check_mllm

        org, sep, ckpt = self.model.partition(":")
        if not sep or not org or not ckpt:
            raise ConfigError(f"--model {self.model!r} is not of the form ORG:CKPT, e.g. openai:gpt-4o-mini.")
        model = Model(org, ckpt, method="mllm", base_url=self.base_url, api_key_env=self.api_key_env, parallel=self.parallel,
                      max_rps=self.max_rps, context_tokens=self.context_tokens, usd_per_m_input=self.usd_per_m_input,
                      usd_per_m_output=self.usd_per_m_output, temperature=self.temperature, max_output_tokens=self.max_output_tokens,
                      timeout_s=self.timeout_s, max_retries=self.max_retries, backoff_s=self.backoff_s)  # fmt: skip
        bad = check_mllm(model)
        if bad:
            raise ConfigError(f"--{bad[0].replace('_', '-')} {bad[1]}")
        return model


@dataclasses.dataclass(frozen=True)
class WikiScrape:
    """Wikipedia pages (MediaWiki API) for every unique 7-rank taxon of a catalog: one JSON line per taxon."""

    taxa: Path
    """A TreeOfLife-10M catalog.csv (or any CSV with kingdom, phylum, class, order, family, genus, species)."""
    out: Path
    """Directory for pages.jsonl and summary.json; a rerun fetches only the taxa not yet there."""
    api_url: str = "https://en.wikipedia.org/w/api.php"
    """The wiki's api.php."""
    user_agent: str = DEFAULT_USER_AGENT
    """Descriptive User-Agent with your contact (Wikimedia's policy)."""
    workers: int = 2
    """Threads fetching at once (all share the rate limit)."""
    max_rps: float = 5.0
    """API requests per second, at most."""
    max_retries: int = 5
    """Retries of one request after 429, 5xx or a network error."""
    backoff_s: float = 1.0
    """First retry delay (doubles per retry; Retry-After honoured)."""
    limit: int | None = None
    """Only the first N taxa (a trial run)."""


@dataclasses.dataclass(frozen=True)
class WikiFilter:
    """Keep only the sentences of scraped pages that describe visual appearance, with an LLM."""

    in_: Annotated[Path, tyro.conf.arg(name="in")]
    """The scrape's output directory (pages.jsonl)."""
    out: Path
    """Directory for descriptions.jsonl, summary.json and the answer cache (answers.sqlite)."""
    llm: LlmOptions
    prompt: Path | None = None
    """Prompt file ({name}, {ranks}, {text} are filled in); default: the packaged prompts/filter.txt."""
    max_chars: int = 6000
    """Longest page text sent (longer text is cut at a sentence end)."""


@dataclasses.dataclass(frozen=True)
class CaptionsGenerate:
    """One caption per image of TreeOfLife-10M webdataset shards, from a VLM given the taxon's description and format examples."""

    shards: str
    """Shard paths, brace-expanded: 'PATH/shard-{000000..000159}.tar' (several patterns: separate with spaces)."""
    out: Path
    """Directory for uuid_caption_description/ (one parquet per shard), progress/ and the answer cache."""
    llm: LlmOptions
    wiki: Path | None = None
    """The filter's output directory (descriptions.jsonl); without it, captions get no description."""
    examples: Path | None = None
    """Format examples: a CSV/parquet with columns class, description (BioCAP's format_examples), or a directory holding one."""
    prompt: Path | None = None
    """Prompt file ({name}, {scientific_name}, {examples}, {description}, {word_limit}); default: prompts/caption.txt."""
    shard_workers: int = 2
    """Shards processed at once (their requests share the model's limits)."""
    job_index: int | None = None
    """This job's share of the shards (shards i, i+N, ...); default: $SLURM_ARRAY_TASK_ID, else all shards."""
    num_jobs: int | None = None
    """How many jobs split the shards; default: $SLURM_ARRAY_TASK_COUNT, else 1."""
    word_limit: int = 20
    """Most words per caption (said in the prompt)."""
    max_description_chars: int = 600
    """Longest description put in a prompt."""
    max_image_side: int = 512
    """Images are shrunk to this longer side before they are sent."""


@dataclasses.dataclass(frozen=True)
class CaptionsStatus:
    """Per-shard progress of a caption run: samples, captions, failures, tokens, cost."""

    out: Path
    """The run's output directory."""


def wiki(cmd: Annotated[WikiScrape, tyro.conf.subcommand("scrape")] | Annotated[WikiFilter, tyro.conf.subcommand("filter")]) -> int:
    """Wikipedia visual descriptions for the tree of life: scrape pages, then filter them with an LLM."""
    from biobench.captions import wiki as wiki_mod

    if isinstance(cmd, WikiScrape):
        summary = wiki_mod.scrape(cmd.taxa, cmd.out, api_url=cmd.api_url, user_agent=cmd.user_agent, workers=cmd.workers,
                                  max_rps=cmd.max_rps, max_retries=cmd.max_retries, backoff_s=cmd.backoff_s, limit=cmd.limit)  # fmt: skip
        print(summary.line())
        return 130 if summary.interrupted else 0
    summary = wiki_mod.filter_pages(cmd.in_, cmd.out, cmd.llm.build(), prompt=cmd.prompt, max_chars=cmd.max_chars, max_usd=cmd.llm.max_usd)
    print(summary.line())
    return 3 if summary.budget_stopped else 0


def captions(
    cmd: Annotated[CaptionsGenerate, tyro.conf.subcommand("generate")] | Annotated[CaptionsStatus, tyro.conf.subcommand("status")],
) -> int:
    """Captions for TreeOfLife-10M webdataset shards from a VLM, or a caption run's progress."""
    from biobench.captions import generate as gen

    if isinstance(cmd, CaptionsStatus):
        print(gen.status_table(cmd.out))
        return 0
    summary = gen.generate(
        gen.expand_shards(cmd.shards), cmd.out, cmd.llm.build(), wiki=cmd.wiki, examples=cmd.examples, prompt=cmd.prompt,
        shard_workers=cmd.shard_workers, job=gen.job_share(cmd.job_index, cmd.num_jobs), word_limit=cmd.word_limit,
        max_description_chars=cmd.max_description_chars, max_image_side=cmd.max_image_side, max_usd=cmd.llm.max_usd,
    )  # fmt: skip
    print(summary.line(), file=sys.stderr)
    return 3 if summary.budget_stopped else 0
