"""Progress for long work: a bar on a terminal, periodic log lines everywhere else.

Bars full of control codes are unreadable in Slurm logs and CI output, and log lines
every iteration drown the interesting messages; so off a terminal we log at most every
`every_s` seconds, with rate and time left.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator

logger = logging.getLogger("biobench.progress")


class Progress:
    """Count units of work (`update(n)`) and report them, as a bar or as log lines."""

    def __init__(self, total: int, desc: str, unit: str = "it", *, every_s: float = 15.0, tty: bool | None = None):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.every_s = every_s
        self.done = 0
        self._start = time.monotonic()
        self._last_log = self._start
        use_bar = sys.stderr.isatty() if tty is None else tty
        self._bar = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last_log >= self.every_s:
            self._last_log = now
            logger.info("%s", self.line())

    def line(self) -> str:
        """e.g. `embed newt: 1,024/36,000 images (2.8%), 850 images/s, 41s left`."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.done / elapsed
        text = f"{self.desc}: {self.done:,}/{self.total:,} {self.unit}"
        if self.total:
            text += f" ({100 * self.done / self.total:.1f}%)"
        text += f", {rate:,.1f} {self.unit}/s"
        if rate > 0 and self.total > self.done:
            text += f", {format_seconds((self.total - self.done) / rate)} left"
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.total and self.done:
            logger.info("%s (done in %s)", self.line(), format_seconds(time.monotonic() - self._start))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items, total: int | None = None, desc: str = "progress", unit: str = "it") -> Iterator:
    """Iterate `items`, reporting progress one unit per item."""
    n = total if total is not None else len(items)
    with Progress(n, desc, unit) as bar:
        for item in items:
            yield item
            bar.update(1)


def format_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
