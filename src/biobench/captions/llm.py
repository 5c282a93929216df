"""The shared way this package talks to a model: one `biobench.mllm.client.Client`, its answer cache, a budget,
and a bounded stream of requests whose answers are handled (and saved) the moment each arrives."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from biobench.config import Model
from biobench.errors import BiobenchError
from biobench.mllm.client import Answer, Budget, Client


@contextlib.contextmanager
def open_client(model: Model, out: Path, max_usd: float | None) -> Iterator[Client]:
    """A client whose answers persist in OUT/answers.sqlite, so a rerun (or a larger --max-usd) never pays twice."""
    from biobench.mllm import registry
    from biobench.store import Store

    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / "answers.sqlite")
    try:
        with Client(model, registry.resolve(model), cache=store, budget=Budget(max_usd)) as client:
            yield client
    finally:
        store.close()


def stream(
    client: Client, items: Iterable, build: Callable[[object], Sequence[dict] | None], on_answer: Callable[[object, Answer | None], None]
) -> None:
    """Send `build(item)` for every item (None: nothing to send, `on_answer(item, None)`), `parallel` at a time,
    calling `on_answer` as each answer comes; items are drawn lazily, so a stream of millions holds a few in memory.
    `BudgetExhausted` stops the stream (answers already handled stay handled); so does a server that cannot be
    reached before any answer came (a `BiobenchError` naming its URL: a wrong --base-url is not recorded as
    millions of failed samples)."""
    answered = 0

    async def run() -> None:
        it = iter(items)
        semaphore = asyncio.Semaphore(client.model.parallel)

        async def worker() -> None:
            nonlocal answered
            for item in it:  # one shared iterator: next() never awaits, so workers never draw the same item
                messages = build(item)
                if messages is None:
                    on_answer(item, None)
                    continue
                answer = await client.answer(messages, semaphore)
                if answer.text is None and not answered and "cannot connect" in (answer.error or ""):
                    where = client.model.base_url or f"the {client.model.org} API"
                    raise BiobenchError(
                        f"Cannot reach the model server at {where}: {answer.error}. Start it (or fix --base-url) and rerun."
                    )
                answered += answer.text is not None
                on_answer(item, answer)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(max(1, client.model.parallel)):
                    group.create_task(worker())
        except BaseExceptionGroup as err:
            first: BaseException = err
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None

    client.run(run())


def fill(template: str, **values: str) -> str:
    """`template` with each `{name}` replaced (plain replacement: JSON braces in a prompt stay as they are)."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def read_prompt(path: Path | None, packaged: str) -> str:
    """The prompt in `path`, else the one shipped as package data (`biobench/captions/prompts/NAME`)."""
    from biobench.errors import ConfigError

    if path is None:
        from importlib.resources import files

        return files("biobench.captions").joinpath("prompts", packaged).read_text(encoding="utf-8")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"Cannot read the prompt file {path}: {err.strerror}.") from None
