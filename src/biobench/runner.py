"""The launcher: plan the grid, skip what is stored, run the rest, write each result as it lands.

Data flows one way: config -> plan -> (per model, per task) features via the cache ->
probe per (n_train, seed) -> store. Work is grouped so each backbone is loaded once and
each task's images are embedded (or read from the cache) once for all its n_train and
seed values. Only this process writes the database, one transaction per experiment, so
Ctrl-C or a crash never leaves half an experiment; the next run does only what is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import logging
import sys
import traceback
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, TextIO

from biobench import provenance
from biobench.backbones import backbone_class, load_vision_backbone
from biobench.cache import FeatureCache
from biobench.config import Config, Experiment, Model, Settings
from biobench.embed import EmbedSettings, get_features
from biobench.errors import BiobenchError, ConfigError
from biobench.store import ExperimentKey, Report, Store
from biobench.tasks import TASKS, EvalContext, TaskReport, get_task, has_code, protocol

logger = logging.getLogger(__name__)

Status = Literal["run", "done", "no data", "no code", "claimed"]


@dataclasses.dataclass(frozen=True)
class Planned:
    """One (task, experiment) of the grid and what the launcher will do with it."""

    task: str
    experiment: Experiment
    key: ExperimentKey
    status: Status


@dataclasses.dataclass
class Summary:
    """What a run did."""

    done: int = 0
    """Already in the store before this run."""
    run: int = 0
    """Run and stored now."""
    failed: int = 0
    skipped: int = 0
    """No data, no code, or claimed by another run."""
    interrupted: bool = False
    errors: list[str] = dataclasses.field(default_factory=list)
    budget_stopped: bool = False
    """--max-usd was reached; experiments not finished were left for a rerun."""
    spent_usd: float = 0.0
    """Money spent on MLLM requests by this run."""
    answers_failed: int = 0
    """MLLM test examples whose request failed for good (scored as wrong)."""

    def line(self) -> str:
        text = f"{self.done} done, {self.run} run"
        if self.failed:
            text += f", {self.failed} failed"
        if self.skipped:
            text += f", {self.skipped} skipped"
        if self.spent_usd:
            text += f", ${self.spent_usd:.4f} spent"
        if self.answers_failed:
            text += f", {self.answers_failed} MLLM answers failed"
        if self.budget_stopped:
            text += " (budget reached: rerun with a larger --max-usd to finish; answers received are kept)"
        if self.interrupted:
            text += " (interrupted: rerun the same command to finish)"
        return text


def mllm_protocol(base: str, model: Model, debug: bool = False) -> str:
    """The protocol id of an MLLM experiment: the task's, the prompting mode, and a hash of any other
    answer-shaping knob changed from its default (image size, temperature, ...), so each is its own experiment."""
    defaults = Model(model.org, model.ckpt, method="mllm").mllm_knobs()
    changed = {k: v for k, v in model.mllm_knobs().items() if k != "prompting" and v != defaults[k]}
    text = f"{base}|mllm-{model.prompting}"
    if changed:
        text += "+" + hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
    return text + ("+debug" if debug else "")


def plan(cfg: Config, store: Store | None = None) -> list[Planned]:
    """Every (task, experiment) pair with its status, for the tasks in [data]; nothing is run."""
    done = store.done_keys() if store is not None else set()
    protocols = {
        name: protocol(task, cfg.task_config(name)) if name in cfg.data else f"{name}/v{task.VERSION}"
        for name, task in TASKS.items()
    }
    # The tasks a config's [data] table names; with no [data] at all, every task shows as
    # "no data", which tells a new user what exists.
    names = sorted(cfg.data) if cfg.data else sorted(TASKS)
    out = []
    for exp in cfg.experiments:
        for name in names:
            m = exp.model
            proto = protocols[name] if m.method != "mllm" else mllm_protocol(protocols[name], m, cfg.settings.debug)
            key = ExperimentKey(name, m.org, m.key_ckpt, m.method, exp.n_train, exp.seed, proto)
            if name not in cfg.data:
                status: Status = "no data"
            elif not has_code(name, m.method):
                status = "no code"
            elif key in done:
                status = "done"
            else:
                status = "run"
            out.append(Planned(name, exp, key, status))
    return out


def load_plugins(plugins: Sequence[str], base: Path) -> None:
    """Import each plugin (module name or .py file, relative to `base`) so it can register backbones."""
    for plugin in plugins:
        try:
            if plugin.endswith(".py"):
                path = Path(plugin) if Path(plugin).is_absolute() else base / plugin
                name = f"biobench_plugin_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None or not path.is_file():
                    raise ConfigError(f"Plugin file {path} not found.")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(plugin)
        except BiobenchError:
            raise
        except Exception as err:
            raise ConfigError(f"Cannot import plugin '{plugin}': {type(err).__name__}: {err}") from err


def load_model(model: Model, device: str):
    """The backbone of a cvml `model`, on `device`."""
    return load_vision_backbone(model.org, model.ckpt, pretrained=model.pretrained).to(device)


def execute(
    model: Model,
    task_name: str,
    experiments: Sequence[Experiment],
    cfg: Config,
    keys: Sequence[ExperimentKey],
    *,
    backbone=None,
) -> Iterator[Report]:
    """Evaluate `model` on one task for several (n_train, seed): embed once, probe per experiment.

    Yields one Report per experiment, as soon as it is ready; raises on errors that
    affect the whole group (data, model).
    """
    s = cfg.settings
    device = s.resolved_device()
    task = get_task(task_name)
    task_cfg = cfg.task_config(task_name)
    images = task.image_set(task_cfg)
    if backbone is None:
        backbone = load_model(model, device)
    embed_settings = EmbedSettings(device, s.batch_size, s.n_workers, s.cache_keys)
    emb = get_features(backbone, images, FeatureCache(s.resolved_cache_dir()), embed_settings)
    data_fp = _data_fingerprint(emb.image_set_fingerprint, images)
    seconds_embed = emb.seconds
    for exp, key in zip(experiments, keys, strict=True):
        ctx = EvalContext(n_train=exp.n_train, seed=exp.seed, n_bootstrap=s.n_bootstrap, n_jobs=s.n_jobs)
        result = task.evaluate(task_cfg, images, emb.features, ctx)
        yield _report(
            key,
            result,
            config={
                "experiment": dataclasses.asdict(exp),
                "task": dataclasses.asdict(task_cfg),
                "settings": {**dataclasses.asdict(s), "device": device},
                "embedding": {"n_cached": emb.n_cached, "n_embedded": emb.n_embedded},
            },
            provenance=provenance.provenance(device),
            data_fingerprint=data_fp,
            backbone_fingerprint=emb.backbone_fingerprint,
            seconds_embed=seconds_embed,
        )
        seconds_embed = 0.0  # later experiments reuse the features in memory


def execute_mllm(
    model: Model,
    task_name: str,
    experiments: Sequence[Experiment],
    cfg: Config,
    keys: Sequence[ExperimentKey],
    client,
) -> Iterator[Report]:
    """Evaluate an MLLM on one task for several (n_train, seed): one Report per experiment, as each finishes."""
    s = cfg.settings
    task = get_task(task_name)
    task_cfg = cfg.task_config(task_name)
    images = task.image_set(task_cfg)  # validates the data, and fingerprints it as probe runs do
    data_fp = _data_fingerprint(images.fingerprint(images.keys(s.cache_keys)), images)
    for exp, key in zip(experiments, keys, strict=True):
        ctx = EvalContext(n_train=exp.n_train, seed=exp.seed, n_bootstrap=s.n_bootstrap, n_jobs=s.n_jobs, debug=s.debug)
        spent = client.stats.spent_usd
        result = task.evaluate_mllm(task_cfg, client, ctx)
        yield _report(
            key,
            result,
            config={
                "experiment": dataclasses.asdict(exp),
                "task": dataclasses.asdict(task_cfg),
                "settings": dataclasses.asdict(s),
                "mllm": {"route": client.route, **dataclasses.asdict(client.spec), "spent_now_usd": client.stats.spent_usd - spent},
            },
            provenance=provenance.provenance("api"),
            data_fingerprint=data_fp,
            prompting=exp.model.prompting,
        )


def _report(key: ExperimentKey, result: TaskReport, **context) -> Report:
    """The store's record of a task's result: the task's numbers plus the run's `context` (config, provenance, ...)."""
    return Report(
        key=key,
        n_train_actual=result.n_train_actual,
        metric=result.metric,
        score=result.score,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        example_ids=result.example_ids,
        example_scores=result.example_scores,
        example_info=result.example_info,
        sub_scores=result.sub_scores,
        seconds_fit=result.seconds_fit,
        seconds_score=result.seconds_score,
        cost_usd=result.cost_usd,
        n_failed=result.n_failed,
        parse_rate=result.parse_rate,
        **context,
    )


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


def _data_fingerprint(image_set_fp: str, images) -> str:
    h = hashlib.sha256(image_set_fp.encode())
    if images.table is not None:
        h.update(images.table.write_csv().encode())
    return h.hexdigest()


def run(cfg: Config, *, dry_run: bool = False, max_usd: float | None = None, out: TextIO | None = None) -> Summary:
    """Run every planned experiment that is not stored yet; returns what happened.

    `max_usd` caps what MLLM requests may cost this run: once reached, the run stops
    cleanly (finished experiments stored, the one in progress not, answers kept).
    """
    out = out or sys.stdout
    if max_usd is not None and max_usd < 0:
        raise ConfigError(f"--max-usd must not be negative; got {max_usd}.")
    base = cfg.source.parent.resolve() if cfg.source is not None else Path.cwd()
    load_plugins(cfg.settings.plugins, base)
    _check_device(cfg.settings)
    for model in {e.model for e in cfg.experiments if e.model.method == "cvml"}:
        backbone_class(model.org)  # an unknown org fails now, listing the known ones, not after hours of work
    check_mllm_models(cfg, need_keys=not dry_run, max_usd=max_usd)
    summary = Summary()
    if dry_run:
        if cfg.settings.db_path.is_file():
            with Store(cfg.settings.db_path) as store:
                planned = plan(cfg, store)
        else:  # a dry run creates nothing
            planned = plan(cfg)
        print_plan(planned, out)
        summary.done = sum(p.status == "done" for p in planned)
        summary.skipped = sum(p.status in ("no data", "no code") for p in planned)
        n_run = sum(p.status == "run" for p in planned)
        print(f"dry run: {n_run} would run, {summary.done} done, {summary.skipped} skipped", file=out)
        return summary
    with Store(cfg.settings.db_path) as store:
        planned = plan(cfg, store)
        summary.done = sum(p.status == "done" for p in planned)
        todo = [p for p in planned if p.status == "run"]

        run_id = uuid.uuid4().hex
        claimed, others = store.claim([p.key for p in todo], run_id)
        for key in others:
            logger.warning("Skipping %s: another run is working on it.", key.describe())
        mine = set(claimed)
        todo = [p for p in todo if p.key in mine]
        summary.skipped = len(planned) - summary.done - len(todo)
        logger.info("%d to run, %d already done, %d skipped.", len(todo), summary.done, summary.skipped)
        try:
            _run_all(todo, cfg, store, run_id, summary, max_usd)
        except KeyboardInterrupt:
            summary.interrupted = True
            logger.warning("Interrupted; every finished experiment is stored.")
        finally:
            with contextlib.suppress(Exception):
                store.release(run_id)
    print(summary.line(), file=out)
    return summary


def _run_all(todo: list[Planned], cfg: Config, store: Store, run_id: str, summary: Summary, max_usd: float | None = None) -> None:
    from biobench.mllm.client import Budget

    by_model: dict[Model, dict[str, list[Planned]]] = {}
    for p in todo:
        by_model.setdefault(p.experiment.model, {}).setdefault(p.task, []).append(p)
    budget = Budget(max_usd)
    backbone = None

    def probe_reports(model: Model, task_name: str, items: list[Planned]) -> Iterator[Report]:
        """A task's reports; the model loads on first use, inside `_store_reports`' error handling."""
        nonlocal backbone
        if backbone is None:
            backbone = load_model(model, cfg.settings.resolved_device())
        yield from execute(model, task_name, [p.experiment for p in items], cfg, [p.key for p in items], backbone=backbone)

    for model, by_task in by_model.items():
        if model.method == "mllm":
            if not _run_mllm(model, by_task, cfg, store, run_id, summary, budget, len(todo)):
                return  # budget reached: stop everything, cleanly
            continue
        groups = list(by_task.items())
        for i, (task_name, items) in enumerate(groups):
            reports = probe_reports(model, task_name, items)
            stored = _store_reports(reports, task_name, model, len(items), store, run_id, summary, len(todo))
            if not stored and backbone is None:  # the model itself failed: its other tasks would fail the same way
                summary.failed += sum(len(rest) for _, rest in groups[i + 1 :])
                break
        backbone = None  # free the model before the next one loads
        _free_accelerator()


def _run_mllm(
    model: Model,
    by_task: dict[str, list[Planned]],
    cfg: Config,
    store: Store,
    run_id: str,
    summary: Summary,
    budget,
    n_todo: int,
) -> bool:
    """Run one MLLM's experiments, answers cached in the store as they arrive. False when the budget ran out."""
    from biobench.mllm import registry
    from biobench.mllm.client import BudgetExhausted, Client

    spent_before = budget.spent_usd
    try:
        with Client(model, registry.resolve(model), cache=store, budget=budget, seed=0) as client:
            for task_name, items in by_task.items():
                keys = [p.key for p in items]
                reports = execute_mllm(model, task_name, [p.experiment for p in items], cfg, keys, client)  # lazy: runs as stored
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
        counter,
        k.describe(),
        report.metric,
        report.score,
        ci,
        report.n_test,
        report.seconds_embed or 0.0,
        report.seconds_fit or 0.0,
    )


def print_plan(planned: Sequence[Planned], out: TextIO) -> None:
    width = max((len(p.key.describe()) for p in planned), default=0)
    for p in planned:
        print(f"{p.status:<8}  {p.key.describe():<{width}}  {p.key.protocol}", file=out)


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
