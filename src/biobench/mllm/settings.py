"""The `[[models]]` keys that only multimodal LLMs (method = "mllm") take, with their checks.

`biobench.config.Model` inherits these fields (keyword-only, after org/ckpt/method), so a
config's `[[models]]` table stays flat while the MLLM knobs, their documentation and their
range checks live with the MLLM code. Nothing here imports the client or litellm.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal


@dataclasses.dataclass(frozen=True, kw_only=True)
class MllmSettings:
    """How a multimodal LLM is reached and prompted."""

    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. "http://localhost:8000/v1" for vLLM or Ollama; default: the provider's own."""
    api_key_env: str | None = None
    """NAME of the environment variable holding the API key (never the key itself); default: the provider's usual variable, e.g. OPENROUTER_API_KEY."""
    parallel: int = 4
    """Requests in flight at once."""
    max_rps: float = 2.0
    """Requests started per second, at most (retries included)."""
    prompting: Literal["single", "multi"] = "single"
    """In-context examples in one user turn ("single") or as alternating user/assistant turns ("multi"); part of the experiment key."""
    context_tokens: int | None = None
    """Context window in tokens; required for a model the built-in registry does not know (`biobench.mllm.registry`)."""
    usd_per_m_input: float | None = None
    """Price in USD per million input tokens (overrides the registry); needed for costs and --max-usd."""
    usd_per_m_output: float | None = None
    """Price in USD per million output tokens (overrides the registry)."""
    max_image_side: int = 512
    """Images are shrunk so their longer side is at most this many pixels before they are sent."""
    temperature: float = 0.0
    """Sampling temperature sent with every request."""
    max_output_tokens: int = 64
    """Most tokens an answer may have (reserved from the context window when fitting examples)."""
    timeout_s: float = 60.0
    """Seconds to wait for one response before retrying."""
    max_retries: int = 5
    """Retries of one request after 429, 5xx, timeouts or malformed responses; then that example fails."""
    backoff_s: float = 1.0
    """First retry delay; doubles per retry, with jitter, unless the server's Retry-After asks for longer."""
    max_backoff_s: float = 60.0
    """Longest delay between retries (a longer Retry-After is still honoured)."""

    def mllm_knobs(self) -> dict[str, object]:
        """The MLLM fields that change what an answer means (not how fast it comes): keyed into the protocol."""
        return {"prompting": self.prompting, "max_image_side": self.max_image_side, "temperature": self.temperature,
                "max_output_tokens": self.max_output_tokens}  # fmt: skip


MLLM_ONLY = tuple(f.name for f in dataclasses.fields(MllmSettings))
"""[[models]] keys that only mean something with method = "mllm"."""


def check_mllm(m: MllmSettings) -> tuple[str, str] | None:
    """The first out-of-range MLLM setting as (key, what is wrong), or None."""
    for key in ("parallel", "max_image_side", "max_output_tokens"):
        if getattr(m, key) < 1:
            return key, f"must be at least 1; got {getattr(m, key)}."
    if m.max_retries < 0:
        return "max_retries", f"must be 0 or more; got {m.max_retries}."
    for key in ("max_rps", "timeout_s"):
        if getattr(m, key) <= 0:
            return key, f"must be positive; got {getattr(m, key)}."
    for key in ("backoff_s", "max_backoff_s", "temperature", "usd_per_m_input", "usd_per_m_output"):
        value = getattr(m, key)
        if value is not None and value < 0:
            return key, f"must not be negative; got {value}."
    if m.context_tokens is not None and m.context_tokens < 256:
        return "context_tokens", f"must be at least 256; got {m.context_tokens}."
    if m.api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", m.api_key_env):
        # A value that is not a variable name is most likely the key itself: never echo it.
        return "api_key_env", "must be the NAME of an environment variable (e.g. OPENROUTER_API_KEY), not the key itself."
    if m.base_url is not None and not re.match(r"https?://", m.base_url):
        return "base_url", f"must start with http:// or https://; got {m.base_url!r}."
    return None
