"""The launcher: plan the grid, skip what is stored, run the rest, write each result as it lands.

Orchestration only: planning and keys live in `biobench.plan`, the evaluation loops in
`biobench.routes`, what is printed in `biobench.console`. Work is grouped so each
backbone is loaded once and each task's images are embedded (or read from the cache) once
for all its n_train and seed values. Only this process writes the database, one
transaction per experiment, so Ctrl-C or a crash never leaves half an experiment; the
next run does only what is missing. Claims keep two launchers apart; `--max-usd` stops
MLLM work cleanly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import traceback
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from biobench import executors
from biobench.backbones import backbone_class
from biobench.config import Config, Model, Settings
from biobench.console import Summary, print_plan, print_result
from biobench.errors import BiobenchError, ConfigError
from biobench.examples import Examples
from biobench.plan import Planned, plan
from biobench.plugins import load_plugins
from biobench.routes import load_model, mllm_reports, probe_reports, text_reports
from biobench.store import Report, Store, StoreError
from biobench.tasks import get_task

logger = logging.getLogger(__name__)

__all__ = ["Planned", "Summary", "plan", "run"]


def check_mllm_models(cfg: Config, *, need_keys: bool, max_usd: float | None = None) -> None:
    """Fail before any work on an MLLM entry that cannot run: unknown context window, missing key, no price for a budget."""
    from biobench.mllm import registry
    from biobench.mllm.client import api_key

    for model in dict.fromkeys(e.model for e in cfg.experiments if e.model.method == "mllm"):
        spec = registry.resolve(model)
        if need_keys:
            api_key(model)
        if max_usd is not None and (spec.usd_per_m_input is None or spec.usd_per_m_output is None):
            raise ConfigError(
                f"--max-usd needs prices, and model {model.name} has none: add usd_per_m_input and usd_per_m_output "
                "to its [[models]] entry (0 for a free local server)."
            )


def run(cfg: Config, *, dry_run: bool = False, max_usd: float | None = None, out: TextIO | None = None, detach: bool = False) -> Summary:
    """Run every planned experiment that is not stored yet; returns what happened.

    `max_usd` caps what MLLM requests may cost this run: once reached, the run stops
    cleanly (finished experiments stored, the one in progress not, answers kept).
    `detach` (executor = "slurm"): submit the jobs and return; rerunning collects them.
    """
    out = out or sys.stdout
    if detach and cfg.settings.executor != "slurm":
        raise ConfigError(f'--detach needs executor = "slurm" (this run\'s executor is "{cfg.settings.executor}").')
    if max_usd is not None and max_usd < 0:
        raise ConfigError(f"--max-usd must not be negative; got {max_usd}.")
    base = cfg.source.parent.resolve() if cfg.source is not None else Path.cwd()
    load_plugins(cfg.settings.plugins, base)
    _check_device(cfg.settings)
    for model in dict.fromkeys(e.model for e in cfg.experiments if e.model.method in ("cvml", "zero-shot")):
        # An unknown org or checkpoint name fails now (dry runs too), listing the known ones, not after hours of work.
        backbone_class(model.org).check_ckpt(model.ckpt, model.pretrained)
    check_mllm_models(cfg, need_keys=not dry_run, max_usd=max_usd)
    summary = Summary()
    if dry_run:
        if cfg.settings.db_path.is_file():
            with Store(cfg.settings.db_path, readonly=True) as store:
                planned = plan(cfg, store)
        else:  # a dry run creates nothing
            planned = plan(cfg)
        planned, examples = read_data(planned, cfg, summary)
        print_plan(planned, out)
        if cfg.settings.executor == "slurm":
            _print_slurm_plan(planned, cfg, examples, out)
        summary.done = sum(p.status == "done" for p in planned)
        summary.skipped = sum(p.status in ("no data", "no code", "n/a") for p in planned)
        n_run = sum(p.status == "run" for p in planned)
        bad = f", {summary.failed} with bad data" if summary.failed else ""
        print(f"dry run: {n_run} would run, {summary.done} done, {summary.skipped} skipped{bad}", file=out)
        return summary
    with Store(cfg.settings.db_path) as store:
        if executors.jobs_folder(cfg).is_dir():
            n = executors.ingest_all(executors.jobs_folder(cfg), store)
            if n:
                logger.info("Stored %d result(s) that earlier jobs left in %s.", n, executors.jobs_folder(cfg))
        planned = plan(cfg, store)
        summary.done = sum(p.status == "done" for p in planned)
        planned, examples = read_data(planned, cfg, summary)
        todo = [p for p in planned if p.status == "run"]

        run_id = uuid.uuid4().hex
        claimed, others = store.claim([p.key for p in todo], run_id)
        for key in others:
            logger.warning("Skipping %s: another run is working on it.", key.describe())
        mine = set(claimed)
        todo = [p for p in todo if p.key in mine]
        summary.skipped = len(planned) - summary.done - summary.failed - len(todo)
        logger.info("%d to run, %d already done, %d skipped.", len(todo), summary.done, summary.skipped)
        try:
            if cfg.settings.executor == "local":
                _run_all(todo, cfg, store, run_id, summary, max_usd, examples)
            else:
                _run_elsewhere(todo, cfg, store, run_id, summary, max_usd, examples, detach)
        except StoreError as err:  # nothing more can be stored: stop cleanly, count what really happened
            summary.store_error = str(err)
            summary.errors.append(str(err))
            summary.not_started = len(todo) - summary.run - summary.failed
            logger.error("%s", err)
        except KeyboardInterrupt:
            summary.interrupted = True
            logger.warning("Interrupted; every finished experiment is stored.")
            if cfg.settings.executor == "slurm":
                logger.warning("Submitted jobs keep running: rerun the same command to collect them (`biobench status` shows them).")
        finally:
            with contextlib.suppress(Exception):
                store.release(run_id)
    print(summary.line(), file=out)
    return summary


def read_data(planned: list[Planned], cfg: Config, summary: Summary) -> tuple[list[Planned], dict[str, Examples]]:
    """Read every task that has work to do, before any model loads: a task whose data is
    missing, empty or of another task is marked "bad data" (its experiments count as failed,
    with the reader's message), and the rest of the grid goes on."""
    examples: dict[str, Examples] = {}
    bad: set[str] = set()
    for name in dict.fromkeys(p.task for p in planned if p.status == "run"):
        try:
            examples[name] = get_task(name).read(cfg.task_options_for(name))
        except (BiobenchError, OSError) as err:
            bad.add(name)
            n = sum(p.task == name and p.status == "run" for p in planned)
            summary.failed += n
            summary.errors.append(f"{name} ({n} experiment(s) not run): {err}")
            logger.error("%s: %s", name, err)
    out = [dataclasses.replace(p, status="bad data") if p.task in bad and p.status == "run" else p for p in planned]
    return out, examples


def _run_all(
    todo: list[Planned],
    cfg: Config,
    store: Store,
    run_id: str,
    summary: Summary,
    max_usd: float | None = None,
    examples: dict[str, Examples] | None = None,
) -> None:
    from biobench.mllm.client import Budget

    by_model: dict[Model, dict[str, list[Planned]]] = {}
    for p in todo:
        by_model.setdefault(p.experiment.model, {}).setdefault(p.task, []).append(p)
    budget = Budget(max_usd)
    backbone = None
    data = examples or {}

    def task_reports(model: Model, task_name: str, items: list[Planned]) -> Iterator[Report]:
        """A task's reports; the model loads on first use, inside `_store_reports`' error handling."""
        nonlocal backbone
        if backbone is None:
            backbone = load_model(model, cfg.settings.resolved_device())
        reports = text_reports if model.method == "zero-shot" else probe_reports
        yield from reports(backbone, task_name, [p.experiment for p in items], [p.key for p in items], cfg, data.get(task_name))

    for model, by_task in by_model.items():
        if model.method == "mllm":
            if not _run_mllm(model, by_task, cfg, store, run_id, summary, budget, len(todo), data):
                return  # budget reached: stop everything, cleanly
            continue
        groups = list(by_task.items())
        for i, (task_name, items) in enumerate(groups):
            reports = task_reports(model, task_name, items)
            stored = _store_reports(reports, task_name, model, len(items), store, run_id, summary, len(todo))
            if not stored and backbone is None:  # the model itself failed: its other tasks would fail the same way
                summary.failed += sum(len(rest) for _, rest in groups[i + 1 :])
                break
        backbone = None  # free the model before the next one loads
        _free_accelerator()


def _run_elsewhere(
    todo: list[Planned],
    cfg: Config,
    store: Store,
    run_id: str,
    summary: Summary,
    max_usd: float | None,
    examples: dict[str, Examples],
    detach: bool,
) -> None:
    """executor = "pool" or "slurm": cvml and zero-shot jobs on workers (`biobench.executors`); MLLMs here, after."""
    mllm = [p for p in todo if p.experiment.model.method == "mllm"]
    jobs = executors.make_jobs(p for p in todo if p.experiment.model.method != "mllm")
    if jobs and cfg.settings.executor == "pool":
        executors.run_pool_jobs(jobs, cfg, store, summary, len(todo))
    elif jobs:
        executors.run_slurm_jobs(jobs, cfg, store, summary, len(todo), detach=detach, examples=examples)
        summary.detached = detach
    store.heartbeat(run_id)
    if mllm:
        _run_all(mllm, cfg, store, run_id, summary, max_usd, examples)


def _print_slurm_plan(planned: list[Planned], cfg: Config, examples: dict[str, Examples], out: TextIO) -> None:
    """The dry run's slurm jobs: what each submitted job runs, its estimate and time limit (`executors.size_jobs`)."""
    jobs = executors.make_jobs(p for p in planned if p.status == "run" and p.experiment.model.method != "mllm")
    if not jobs:
        return
    rows: list[dict] = []
    if cfg.settings.db_path.is_file():
        with Store(cfg.settings.db_path, readonly=True) as store:
            rows = store.rows()
    for line in executors.plan_lines(executors.size_jobs(jobs, cfg, rows, examples), cfg):
        print(line, file=out)


def _run_mllm(
    model: Model,
    by_task: dict[str, list[Planned]],
    cfg: Config,
    store: Store,
    run_id: str,
    summary: Summary,
    budget,
    n_todo: int,
    data: dict[str, Examples],
) -> bool:
    """Run one MLLM's experiments, answers cached in the store as they arrive. False when the budget ran out."""
    from biobench.mllm import registry
    from biobench.mllm.client import BudgetExhausted, Client

    spent_before = budget.spent_usd
    try:
        with Client(model, registry.resolve(model), cache=store, budget=budget, seed=0) as client:
            for task_name, items in by_task.items():
                keys = [p.key for p in items]
                reports = mllm_reports(client, task_name, [p.experiment for p in items], keys, cfg, data.get(task_name))  # lazy
                _store_reports(reports, task_name, model, len(items), store, run_id, summary, n_todo, passthrough=(BudgetExhausted,))
    except BudgetExhausted as err:
        summary.budget_stopped = True
        logger.warning("%s", err)
        return False
    finally:
        summary.spent_usd += budget.spent_usd - spent_before
    return True


def _store_reports(
    reports: Iterable[Report],
    task_name: str,
    model: Model,
    n: int,
    store: Store,
    run_id: str,
    summary: Summary,
    n_todo: int,
    passthrough: tuple[type[BaseException], ...] = (),
) -> bool:
    """Store each of a task's `n` reports as it arrives (`reports` is lazy: the work happens as it
    is iterated). On an error (other than Ctrl-C and `passthrough`), count the unfinished ones
    as failed, say why, and return False."""
    remaining = n
    try:
        for report in reports:
            store.write(report)
            store.heartbeat(run_id)
            remaining -= 1
            summary.run += 1
            summary.answers_failed += report.n_failed or 0
            print_result(report, f"[{summary.run + summary.failed}/{n_todo}]")
    except StoreError:
        summary.failed += 1  # the experiment being written; the task's others never started
        raise
    except (KeyboardInterrupt, SystemExit, *passthrough):
        raise
    except Exception as err:
        summary.failed += remaining
        if isinstance(err, BiobenchError):
            message = str(err)
            logger.error("%s with %s failed: %s", task_name, model.name, err)
        else:
            message = f"{type(err).__name__}: {err}"
            logger.error("%s with %s failed:\n%s", task_name, model.name, traceback.format_exc())
        summary.errors.append(f"{task_name} with {model.name}: {message}")
        return False
    return True


def _check_device(settings: Settings) -> None:
    import torch

    device = settings.resolved_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device = 'cuda' but torch sees no CUDA GPU; set device = 'cpu' or run on a GPU machine.")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device = 'mps' but MPS is not available; set device = 'cpu'.")


def _free_accelerator() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
