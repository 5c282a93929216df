"""An async client for one multimodal LLM behind an OpenAI-compatible API, on litellm.

- Route: `ORG/CKPT` through litellm (openrouter/..., openai/...); with a `base_url`, the
  OpenAI-compatible route `openai/CKPT` with that `api_base` (vLLM, Ollama, any proxy).
- Keys: read from the environment variable named by `api_key_env` when the client is
  built, held privately, and removed from every error text before it is logged or
  stored. With a `base_url` the key comes only from `api_key_env`, so a provider key
  in the environment is never sent to some other server.
- Limits: at most `parallel` requests in flight and at most `max_rps` request starts
  per second (evenly spaced; retries count).
- Retries: 429, 5xx, timeouts, connection errors and malformed responses are retried up
  to `max_retries` times with exponential backoff and jitter, waiting at least what a
  `Retry-After` header asks. Other errors (400, 401, 404, ...) fail that example at once;
  a failed example carries its reason and never stops the run.
- Money: each answer's cost comes from the response's token usage and the model's
  prices; a `Budget` stops sending (raising `BudgetExhausted`) once spent.
- Resume: successful answers go to an `AnswerCache` (the results database) the moment
  they arrive, keyed by a hash of model + request, so a rerun never pays twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from biobench.config import Model
from biobench.errors import BiobenchError, ConfigError
from biobench.mllm.litellm_setup import litellm
from biobench.mllm.registry import MllmSpec

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 600.0
"""Longest Retry-After honoured; a server asking for more is treated as asking for this."""
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})


class BudgetExhausted(BiobenchError):
    """The run's `--max-usd` budget is spent; nothing more is sent."""


@dataclasses.dataclass
class Budget:
    """Money a run may spend on API calls (None = no limit) and what it has spent."""

    max_usd: float | None = None
    spent_usd: float = 0.0

    def check(self) -> None:
        if self.max_usd is not None and self.spent_usd >= self.max_usd:
            raise BudgetExhausted(
                f"Budget of ${self.max_usd:.4f} reached (spent ${self.spent_usd:.4f}). Answers received so far are "
                "saved: rerun (with a larger --max-usd) to go on where this run stopped."
            )


@dataclasses.dataclass(frozen=True)
class Answer:
    """The outcome of one request."""

    text: str | None
    """The model's reply; None when the request failed for good."""
    error: str | None = None
    """Why it failed (secrets removed)."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    attempts: int = 0
    """Requests sent for this answer (0 when it came from the cache)."""
    cached: bool = False
    top_logprobs: tuple[tuple[str, float], ...] | None = None
    """The first output token's most likely tokens as (token, log-probability), when asked for and the provider
    returned them (None otherwise)."""


class AnswerCache(Protocol):
    """Where answers persist as they arrive (the results store implements it)."""

    def get_answer(self, key: str) -> dict | None:
        """{text, input_tokens, output_tokens, cost_usd} of a stored answer, or None."""
        ...

    def put_answer(self, key: str, model: str, answer: Answer) -> None: ...


@dataclasses.dataclass
class Stats:
    """What a client did, for the run summary."""

    requests: int = 0
    retries: int = 0
    cached: int = 0
    failed: int = 0
    spent_usd: float = 0.0


class RateLimiter:
    """Request starts spaced at least 1/`rps` seconds apart (so any window of T seconds holds at most T*rps + 1)."""

    def __init__(self, rps: float):
        self.interval = 1.0 / rps
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self.interval  # reserved before sleeping: no await between read and write
        if start > now:
            await asyncio.sleep(start - now)


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class _Fail(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def redact(text: str, secret: str | None, min_piece: int = 6) -> str:
    """`text` without `secret` or any piece of it of `min_piece`+ characters (providers echo parts of keys)."""
    if not secret:
        return text
    text = text.replace(secret, "[REDACTED]")
    for i in range(max(0, len(secret) - min_piece + 1)):
        piece = secret[i : i + min_piece]
        if piece in text:
            text = text.replace(piece, "[REDACTED]")
    return text


def _first(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _retry_after(err: Exception) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), if the error carries one."""
    headers = None
    response = getattr(err, "response", None)
    if response is not None:
        headers = getattr(response, "headers", None)
    if not headers:
        headers = getattr(err, "litellm_response_headers", None)
    if not headers:
        return None
    value = dict((str(k).lower(), v) for k, v in dict(headers).items()).get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def api_key(model: Model) -> str | None:
    """The key from the variable `model.api_key_env` names (None when it names none); a `ConfigError` naming
    the variable (never a value) when it is unset."""
    if not model.api_key_env:
        return None
    key = os.environ.get(model.api_key_env)
    if not key:
        raise ConfigError(
            f"Model {model.name}: the environment variable {model.api_key_env} (its api_key_env) is not set; "
            f"export {model.api_key_env}=<your key> before running."
        )
    return key


class Client:
    """Sends chat-completions requests for one `[[models]]` entry with method = "mllm"."""

    def __init__(
        self,
        model: Model,
        spec: MllmSpec,
        *,
        cache: AnswerCache | None = None,
        budget: Budget | None = None,
        seed: int = 0,
    ):
        if model.method != "mllm":
            raise ConfigError(f'{model.name} has method = {model.method!r}; an MLLM client needs method = "mllm".')
        self.model = model
        self.spec = spec
        self.cache = cache
        self.budget = budget if budget is not None else Budget()
        self.stats = Stats()
        self._api_key = api_key(model)
        if self._api_key is None and model.base_url:
            self._api_key = "none"  # local servers ignore it; never forward a provider's key to another host
        self.route = f"openai/{model.ckpt}" if model.base_url else f"{model.org}/{model.ckpt}"
        self._rng = random.Random(seed)  # backoff jitter only; answers do not depend on it
        self._limiter = RateLimiter(model.max_rps)
        self._runner: asyncio.Runner | None = None

    def __repr__(self) -> str:
        return f"Client({self.model.name}, route={self.route!r})"

    @property
    def token_model(self) -> str:
        """Model name used for token counting."""
        return self.route

    # Event loop: one per client, so litellm's pooled HTTP connections stay valid across batches.

    def run(self, coro):
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(coro)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Requests

    def request_key(self, messages: Sequence[dict], top_logprobs: int | None = None) -> str:
        """Identity of a request for the answer cache: everything that shapes the answer, nothing secret."""
        m = self.model
        payload = {
            "route": self.route,
            "base_url": m.base_url,
            "temperature": m.temperature,
            "max_tokens": m.max_output_tokens,
            "messages": list(messages),
        }
        if top_logprobs:  # only then: keys of requests without log-probabilities are unchanged
            payload["top_logprobs"] = top_logprobs
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def answer_all(self, requests: Sequence[Sequence[dict]], *, top_logprobs: int | None = None) -> list[Answer]:
        """Answers to many requests, concurrently within the limits, in request order. `top_logprobs`: also ask for
        that many alternatives of each output token (`Answer.top_logprobs`, where the provider gives them)."""
        return self.run(self._answer_all(requests, top_logprobs))

    async def _answer_all(self, requests: Sequence[Sequence[dict]], top_logprobs: int | None = None) -> list[Answer]:
        semaphore = asyncio.Semaphore(self.model.parallel)
        try:
            async with asyncio.TaskGroup() as group:  # BudgetExhausted in one cancels the rest
                tasks = [group.create_task(self.answer(msgs, semaphore, top_logprobs=top_logprobs)) for msgs in requests]
        except BaseExceptionGroup as group_error:
            raise _first(group_error) from None  # callers see BudgetExhausted, not a group of them
        return [t.result() for t in tasks]

    async def answer(
        self, messages: Sequence[dict], semaphore: asyncio.Semaphore | None = None, *, top_logprobs: int | None = None
    ) -> Answer:
        """One answer: from the cache, or from the API with retries; failures come back as an `Answer` with an error."""
        key = self.request_key(messages, top_logprobs)
        if self.cache is not None:
            hit = self.cache.get_answer(key)
            if hit is not None:
                self.stats.cached += 1
                return Answer(**hit, attempts=0, cached=True)
        semaphore = semaphore or asyncio.Semaphore(1)
        m = self.model
        attempt = 0
        while True:
            self.budget.check()
            try:
                async with semaphore:
                    self.budget.check()  # others may have spent it while this one queued
                    await self._limiter.wait()
                    self.stats.requests += 1
                    attempt += 1
                    answer = await self._send(messages, attempt, top_logprobs)
            except _Retry as retry:
                if attempt > m.max_retries:
                    self.stats.failed += 1
                    reason = f"gave up after {attempt} attempts: {retry.reason}"
                    logger.warning("%s: request failed: %s", m.name, reason)
                    return Answer(None, error=reason, attempts=attempt)
                delay = self._delay(attempt, retry.retry_after)
                self.stats.retries += 1
                logger.info("%s: %s; retry %d/%d in %.2fs.", m.name, retry.reason, attempt, m.max_retries, delay)
                await asyncio.sleep(delay)
                continue
            except _Fail as fail:
                self.stats.failed += 1
                logger.warning("%s: request failed: %s", m.name, fail.reason)
                return Answer(None, error=fail.reason, attempts=attempt)
            if answer.cost_usd:
                self.budget.spent_usd += answer.cost_usd
                self.stats.spent_usd += answer.cost_usd
            if self.cache is not None:
                self.cache.put_answer(key, m.name, answer)
            return answer

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        m = self.model
        backoff = min(m.max_backoff_s, m.backoff_s * 2 ** (attempt - 1)) * (0.5 + 0.5 * self._rng.random())
        if retry_after is not None:
            return max(min(retry_after, MAX_RETRY_AFTER_S), backoff)
        return backoff

    async def _send(self, messages: Sequence[dict], attempt: int, top_logprobs: int | None = None) -> Answer:
        lm = litellm()
        m = self.model
        kwargs: dict = {"api_base": m.base_url} if m.base_url else {}
        if top_logprobs:
            kwargs.update(logprobs=True, top_logprobs=top_logprobs)
        if self._api_key is not None:
            kwargs["api_key"] = self._api_key
        try:
            response = await lm.acompletion(
                model=self.route,
                messages=list(messages),
                temperature=m.temperature,
                max_tokens=m.max_output_tokens,
                timeout=m.timeout_s,
                max_retries=0,
                num_retries=0,
                **kwargs,
            )
        except asyncio.CancelledError:
            raise
        except Exception as err:  # litellm maps every provider error to its exception types
            raise self._classify(err) from None
        try:
            text = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise _Retry("response had no choices") from None
        usage = getattr(response, "usage", None)
        n_in = getattr(usage, "prompt_tokens", None)
        n_out = getattr(usage, "completion_tokens", None)
        if n_in is None:  # some local servers report no usage: count it ourselves
            from biobench.mllm.prompts import count_tokens

            n_in = count_tokens(messages, self.token_model)
        if n_out is None:
            n_out = int(lm.token_counter(model=self.token_model, text=text or ""))
        return Answer(text or "", input_tokens=int(n_in), output_tokens=int(n_out), cost_usd=self.cost(n_in, n_out), attempts=attempt,
                      top_logprobs=first_token_logprobs(response) if top_logprobs else None)  # fmt: skip

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        s = self.spec
        if s.usd_per_m_input is None or s.usd_per_m_output is None:
            return None
        return (input_tokens * s.usd_per_m_input + output_tokens * s.usd_per_m_output) / 1e6

    def _classify(self, err: Exception) -> Exception:
        lm = litellm()
        status = getattr(err, "status_code", None)
        text = redact(str(err), self._api_key)
        reason = f"{type(err).__name__}" + (f" (HTTP {status})" if status else "") + f": {text}"
        if _cannot_connect(err):  # litellm reports a refused connection as an HTTP 500 from the server
            where = self.model.base_url or f"the {self.model.org} API"
            reason = f"cannot connect to {where} (is the server running, and is base_url right?): {text}"
        reason = reason[:500]
        retryable_types = (lm.Timeout, lm.APIConnectionError, lm.RateLimitError, lm.InternalServerError, lm.ServiceUnavailableError, lm.BadGatewayError)  # fmt: skip
        if isinstance(err, lm.ContextWindowExceededError):
            return _Fail(reason)
        if isinstance(err, retryable_types) or (isinstance(status, int) and (status in RETRYABLE_STATUS or status >= 500)):
            return _Retry(reason, _retry_after(err))
        if isinstance(err, json.JSONDecodeError):
            return _Retry(reason)
        return _Fail(reason)


def _field(obj, name: str):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def first_token_logprobs(response) -> tuple[tuple[str, float], ...] | None:
    """`choices[0].logprobs.content[0].top_logprobs` of a chat completion as (token, logprob) pairs; None when absent."""
    try:
        content = _field(_field(response.choices[0], "logprobs"), "content")
        if not content:
            return None
        tops = _field(content[0], "top_logprobs") or []
        pairs = tuple((str(_field(t, "token")), float(_field(t, "logprob"))) for t in tops)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return pairs or None


def _cannot_connect(err: BaseException) -> bool:
    """Whether `err` (or an exception it was raised from) is a failed connection, not an answer from a server."""
    seen: BaseException | None = err
    for _ in range(10):
        if seen is None:
            return False
        text = str(seen).lower()
        if isinstance(seen, ConnectionError) or type(seen).__name__ in {"APIConnectionError", "ConnectError", "ClientConnectorError"}:
            return True
        if "connection refused" in text or "connect call failed" in text or "cannot connect to host" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False
