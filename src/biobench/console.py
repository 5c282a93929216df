"""What a run prints: the plan of a dry run, one line per stored result, the closing summary."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from typing import TextIO

from biobench.plan import Planned
from biobench.store import Report

logger = logging.getLogger("biobench.runner")


@dataclasses.dataclass
class Summary:
    """What a run did."""

    done: int = 0
    """Already in the store before this run."""
    run: int = 0
    """Run and stored now."""
    failed: int = 0
    skipped: int = 0
    """No data, no code, not applicable, or claimed by another run."""
    interrupted: bool = False
    errors: list[str] = dataclasses.field(default_factory=list)
    budget_stopped: bool = False
    """--max-usd was reached; experiments not finished were left for a rerun."""
    spent_usd: float = 0.0
    """Money spent on MLLM requests by this run."""
    answers_failed: int = 0
    """MLLM test examples whose request failed for good (scored as wrong)."""
    not_started: int = 0
    """Experiments never attempted because the run stopped (the results database became unwritable)."""
    store_error: str | None = None
    """Why the results database could not be written, when that stopped the run."""
    jobs_submitted: int = 0
    """Slurm jobs submitted by this run (executor = "slurm")."""
    jobs_live: int = 0
    """Slurm jobs queued or running when the launcher stopped waiting (with --detach: all it submitted or found)."""
    detached: bool = False

    def line(self) -> str:
        text = f"{self.done} done, {self.run} run"
        if self.failed:
            text += f", {self.failed} failed"
        if self.not_started:
            text += f", {self.not_started} not started"
        if self.skipped:
            text += f", {self.skipped} skipped"
        if self.detached:
            text += f", {self.jobs_submitted} job(s) submitted, {self.jobs_live} queued or running (detached: `biobench status` shows them, rerunning collects them)"
        if self.spent_usd:
            text += f", ${self.spent_usd:.4f} spent"
        if self.answers_failed:
            text += f", {self.answers_failed} MLLM answers failed"
        if self.budget_stopped:
            text += " (budget reached: rerun with a larger --max-usd to finish; answers received are kept)"
        if self.store_error:
            text += " (stopped: the results database cannot be written)"
        if self.interrupted:
            text += " (interrupted: rerun the same command to finish)"
        return text


def command() -> str:
    """How to call biobench from this shell: `biobench` when that is this installation, else the path to it."""
    here = os.path.join(os.path.dirname(sys.executable), "biobench")
    found = shutil.which("biobench")
    if found and os.path.realpath(found) == os.path.realpath(here):
        return "biobench"
    if os.path.exists(here):
        rel = os.path.relpath(here)
        return rel if not rel.startswith("..") else here
    return f"{sys.executable} -m biobench"


def print_result(report: Report, counter: str = "") -> None:
    k = report.key
    ci = f" [{report.ci_low:.3f}, {report.ci_high:.3f}]" if report.ci_low is not None else ""
    if k.method == "mllm":
        cost = "" if report.cost_usd is None else f", ${report.cost_usd:.4f}"
        logger.info(
            "%s %s: %s %.3f%s (n_test=%d, parsed %.0f%%, %d failed%s)",
            counter, k.describe(), report.metric, report.score, ci, report.n_test,
            100 * (report.parse_rate or 0.0), report.n_failed or 0, cost,
        )  # fmt: skip
        return
    logger.info(
        "%s %s: %s %.3f%s (n_test=%d, embed %.1fs, fit %.1fs)",
        counter, k.describe(), report.metric, report.score, ci, report.n_test,
        report.seconds_embed or 0.0, report.seconds_fit or 0.0,
    )  # fmt: skip


def print_plan(planned: Sequence[Planned], out: TextIO) -> None:
    width = max((len(p.key.describe()) for p in planned), default=0)
    for p in planned:
        print(f"{p.status:<8}  {p.key.describe():<{width}}  {p.key.protocol}", file=out)
