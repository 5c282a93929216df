"""Known multimodal LLMs: context window and price per million tokens.

Figures from the seeds (small_data_metrics' registry, priced on OpenRouter in early 2025)
and the providers' price lists of the time; prices change, so a config entry's
`context_tokens`, `usd_per_m_input` and `usd_per_m_output` override them, and a model
not listed here is accepted when its entry gives `context_tokens`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from biobench.config import Model
from biobench.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class MllmSpec:
    """What biobench needs to know about a multimodal LLM beyond its name."""

    context_tokens: int
    """Context window (input + output) in tokens."""
    usd_per_m_input: float | None
    """USD per million input tokens; None = unknown (no costs, no budget)."""
    usd_per_m_output: float | None
    """USD per million output tokens; None = unknown."""


REGISTRY: dict[tuple[str, str], MllmSpec] = {
    # OpenRouter, open weights
    ("openrouter", "meta-llama/llama-3.2-11b-vision-instruct"): MllmSpec(16_384, 0.055, 0.055),
    ("openrouter", "qwen/qwen-2-vl-7b-instruct"): MllmSpec(4_096, 0.1, 0.1),
    ("openrouter", "qwen/qwen2.5-vl-72b-instruct"): MllmSpec(32_000, 0.7, 0.7),
    # OpenRouter, proprietary
    ("openrouter", "google/gemini-flash-1.5-8b"): MllmSpec(1_000_000, 0.0375, 0.15),
    ("openrouter", "google/gemini-2.0-flash-lite-001"): MllmSpec(1_000_000, 0.075, 0.3),
    ("openrouter", "google/gemini-2.0-flash-001"): MllmSpec(1_000_000, 0.1, 0.4),
    ("openrouter", "openai/gpt-4o-mini-2024-07-18"): MllmSpec(128_000, 0.15, 0.6),
    ("openrouter", "openai/gpt-4o-2024-11-20"): MllmSpec(128_000, 2.5, 10.0),
    # OpenAI directly
    ("openai", "gpt-4o-mini"): MllmSpec(128_000, 0.15, 0.6),
    ("openai", "gpt-4o-mini-2024-07-18"): MllmSpec(128_000, 0.15, 0.6),
    ("openai", "gpt-4o"): MllmSpec(128_000, 2.5, 10.0),
    ("openai", "gpt-4o-2024-11-20"): MllmSpec(128_000, 2.5, 10.0),
}


def resolve(model: Model) -> MllmSpec:
    """The model's spec: the registry entry with any config overrides, or a `ConfigError` saying what to add."""
    known = REGISTRY.get((model.org, model.ckpt))
    context = model.context_tokens if model.context_tokens is not None else (known and known.context_tokens)
    if not context:
        raise ConfigError(
            f"Multimodal LLM {model.org}:{model.ckpt} is not in biobench's registry: add `context_tokens = N` "
            "(its context window) to its [[models]] entry, and usd_per_m_input / usd_per_m_output to record costs. "
            f"Known: {', '.join(sorted(f'{o}:{c}' for o, c in REGISTRY))}."
        )
    usd_in = model.usd_per_m_input if model.usd_per_m_input is not None else (known.usd_per_m_input if known else None)
    usd_out = model.usd_per_m_output if model.usd_per_m_output is not None else (known.usd_per_m_output if known else None)
    return MllmSpec(int(context), usd_in, usd_out)
