"""Append-only JSON-lines files that survive a killed process: a torn last line is cut off on reopen."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


def read_lines(path: Path) -> Iterator[dict]:
    """The records of `path` (none if it does not exist); a torn or corrupt line is logged and skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s line %d is not valid JSON (a killed run's last line?); ignored, it will be redone.", path, n)


class Appender:
    """Writes one record per line, flushed at once (a kill loses at most the line being written)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size:
            with path.open("rb+") as f:  # cut a torn last line so the next record starts on a line of its own
                data = f.read()
                if not data.endswith(b"\n"):
                    f.truncate(data.rfind(b"\n") + 1)
        self.path = path
        self._f = path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
