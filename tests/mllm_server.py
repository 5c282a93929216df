"""A real OpenAI-compatible chat-completions server for the MLLM tests (aiohttp, 127.0.0.1, ephemeral port).

It answers deterministically from image content: the query (last) image gets the answer
of the in-context example whose mean colour is nearest to its own (1-nearest-neighbour
on mean RGB), which learns the fixtures' class tints from a few examples. With no
examples it answers that it is not sure. Failure modes are scripted per request:

- `script`: modes for the next requests, consumed one per request in arrival order
  ("ok", "429", "500", "malformed", "stall", "401", "garbage", "plain");
- `default`: the mode once the script is used up.

`judge`, when set, answers instead from the prompt text and the (last) image's mean colour:
it returns the answer text and the first token's top log-probabilities (a list of
(token, logprob)), sent as `choices[0].logprobs` (OpenAI's layout) only when the request asks
for `logprobs` and `logprobs_enabled` is on: a provider that gives none is `logprobs_enabled = False`.

It records, per request: arrival time (monotonic), number of images, a digest of the
query image, the Authorization header, the mode it used and the answer it gave, and
the highest number of requests in flight at once.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import io
import re
import threading
import time
from collections.abc import Callable

import numpy as np
from aiohttp import web
from PIL import Image


@dataclasses.dataclass
class Record:
    t: float
    n_images: int
    query: str
    auth: str
    mode: str
    answer: str | None
    text: str = ""
    """Every text part of the request, joined by newlines (the prompt as the server received it)."""


@dataclasses.dataclass
class ServerState:
    script: list[str] = dataclasses.field(default_factory=list)
    default: str = "ok"
    retry_after: str | None = "0"
    stall_s: float = 2.0
    latency_s: float = 0.0
    error_message: str = "server error"
    prompt_tokens: int = 1000
    completion_tokens: int = 10
    responder: Callable[[str, int], str] | None = None
    """When set, the answer to an "ok" request is responder(prompt text, number of images) instead of the 1-NN label."""
    judge: Callable[[str, np.ndarray], tuple[str, list[tuple[str, float]]]] | None = None
    """When set, an "ok" request is answered by judge(prompt text, mean RGB of the last image) -> (text, top logprobs)."""
    logprobs_enabled: bool = True
    """Whether `judge`'s log-probabilities are sent (to requests asking for them)."""
    logprob_requests: int = 0
    """Requests that asked for log-probabilities."""
    records: list[Record] = dataclasses.field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.script, self.default, self.retry_after = [], "ok", "0"
            self.stall_s, self.latency_s, self.error_message = 2.0, 0.0, "server error"
            self.prompt_tokens, self.completion_tokens, self.responder = 1000, 10, None
            self.judge, self.logprobs_enabled, self.logprob_requests = None, True, 0
            self.records, self.in_flight, self.max_in_flight = [], 0, 0

    def next_mode(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def by_mode(self, mode: str) -> list[Record]:
        return [r for r in self.records if r.mode == mode]


def mean_colour(url: str) -> np.ndarray:
    data = base64.b64decode(url.split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)


def parse_request(body: dict) -> tuple[list[str], list[str | None], str]:
    """(image urls in order, the bold answer given after each image or None, the query text)."""
    events: list[tuple[str, str]] = []
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            events.append(("text", content))
            continue
        for part in content:
            if part["type"] == "image_url":
                events.append(("image", part["image_url"]["url"]))
            elif part["type"] == "text":
                events.append(("text", part["text"]))
    images, answers, query = [], [], ""
    for kind, value in events:
        if kind == "image":
            images.append(value)
            answers.append(None)
        else:
            query = value
            m = re.search(r"\*\*(.+?)\*\*", value)
            if m and answers and answers[-1] is None:
                answers[-1] = m.group(1)
    return images, answers, query


def request_text(body: dict) -> str:
    """All text parts of a request's messages, in order, joined by newlines."""
    parts = []
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [p["text"] for p in content if p.get("type") == "text"]
    return "\n".join(parts)


def nearest_answer(images: list[str], answers: list[str | None]) -> str | None:
    shots = [(mean_colour(u), a) for u, a in zip(images[:-1], answers[:-1]) if a is not None]
    if not shots:
        return None
    query = mean_colour(images[-1])
    dists = [float(np.sum((c - query) ** 2)) for c, _ in shots]
    return shots[int(np.argmin(dists))][1]


def make_app(state: ServerState) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        mode = state.next_mode()
        arrived = time.monotonic()
        with state.lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            body = await request.json()
            images, answers, _ = parse_request(body)
            query = hashlib.sha256(images[-1].encode()).hexdigest()[:16] if images else ""
            text = request_text(body)
            record = Record(arrived, len(images), query, request.headers.get("Authorization", ""), mode, None, text)
            with state.lock:
                state.records.append(record)
            if state.latency_s:
                await asyncio.sleep(state.latency_s)
            if mode == "429":
                headers = {"Retry-After": state.retry_after} if state.retry_after is not None else {}
                return web.json_response({"error": {"message": "rate limited", "type": "rate_limit"}}, status=429, headers=headers)
            if mode == "500":
                return web.json_response({"error": {"message": state.error_message, "type": "server_error"}}, status=500)
            if mode == "401":
                return web.json_response(
                    {"error": {"message": state.error_message, "type": "invalid_request_error", "code": "invalid_api_key"}},
                    status=401,
                )
            if mode == "malformed":
                return web.Response(text='{"id": "x", "choices": [', content_type="application/json")
            if mode == "stall":
                await asyncio.sleep(state.stall_s)
            label = nearest_answer(images, answers)
            logprobs = None
            if body.get("logprobs"):
                with state.lock:
                    state.logprob_requests += 1
            if state.judge is not None and mode == "ok":
                text, tops = state.judge(text, mean_colour(images[-1]))
                if body.get("logprobs") and state.logprobs_enabled:
                    k = int(body.get("top_logprobs") or 1)
                    tops = sorted(tops, key=lambda t: -t[1])[:k]
                    logprobs = {"content": [{"token": tops[0][0], "logprob": tops[0][1], "bytes": None,
                                             "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in tops]}]}  # fmt: skip
            elif state.responder is not None and mode == "ok":
                text = state.responder(text, len(images))
            elif mode == "garbage" or label is None:
                text = "I am not sure what this is."
            elif mode == "plain":
                text = label
            else:
                text = f"This looks like **{label}**."
            record.answer = text
            return web.json_response(
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "test"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": logprobs}
                    ],
                    "usage": {
                        "prompt_tokens": state.prompt_tokens,
                        "completion_tokens": state.completion_tokens,
                        "total_tokens": state.prompt_tokens + state.completion_tokens,
                    },
                }
            )
        finally:
            with state.lock:
                state.in_flight -= 1

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/chat/completions", chat)
    return app


class Server:
    """The app in a background thread with its own event loop; `url` is the base URL (ending in /v1)."""

    def __init__(self) -> None:
        self.state = ServerState()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(make_app(self.state), handle_signals=False, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> Server:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test MLLM server did not start")
        return self

    def stop(self) -> None:
        async def shutdown():
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


_SERVER: Server | None = None


def shared_server() -> Server:
    """The test server, started on first use and kept for the session (tests reset its state)."""
    global _SERVER
    if _SERVER is None:
        _SERVER = Server().start()
    return _SERVER
