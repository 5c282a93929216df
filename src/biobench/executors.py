"""Executors: where the grid's cvml and zero-shot jobs run, with one writer and nothing lost.

A job is one (model, task) with all its (n_train, seed) experiments: it loads the backbone
once, embeds the task's images once (or reads them from the feature cache) and evaluates
every experiment. Jobs never write the results database: each finished experiment is a
pickled `Report` written atomically (temporary file, fsync, rename) into the job's outbox,
`FOLDER/outbox/JOB/`, and the launcher ingests the outbox -- one transaction per
experiment, then the file is deleted. A report ingested twice (the launcher died between
its commit and the delete) is skipped by the store, so nothing is stored twice; a job
killed mid-way leaves its finished experiments in its outbox and nothing else, so the next
run does only what is missing. Nothing here depends on SQLite locking across machines.

- `pool`: worker processes on this machine (one per visible GPU, each pinned to it, or
  `pool_size` CPU workers); a worker keeps its last backbone loaded, and jobs are handed
  out model by model.
- `slurm`: jobs submitted through submitit as job arrays (one array per resource shape),
  pre-empted or timed-out jobs requeued by submitit's checkpointing up to
  `[slurm] max_requeue` times (a requeued job skips the experiments already in its
  outbox). Job ids live in the store's `jobs` table, so `--detach` can return at once,
  `biobench status` can show them, and a rerun reattaches to live jobs instead of
  submitting them again. A failed job's error and log path are shown and stored; the
  other jobs go on. Job states are read with `squeue` (no accounting database needed).
  `[slurm] cluster = "local"` runs the same code path with submitit's local executor
  (processes on this machine); tests/test_slurm_real.py runs it on a real single-node Slurm.

MLLM models always run in the launcher: their answer cache is the database itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from biobench.config import Config, Experiment, Model
from biobench.store import ExperimentKey, Report, Store

logger = logging.getLogger("biobench.runner")

REPORT_SUFFIX = ".report"


@dataclasses.dataclass(frozen=True)
class Job:
    """One (model, task) and its experiments: the unit every executor runs."""

    model: Model
    task: str
    experiments: tuple[Experiment, ...]
    keys: tuple[ExperimentKey, ...]

    @property
    def name(self) -> str:
        """A stable name: the same work always has the same outbox."""
        digest = hashlib.sha256("\n".join(sorted(k.to_json() for k in self.keys)).encode()).hexdigest()[:12]
        slug = "".join(c if c.isalnum() or c in "-." else "-" for c in self.model.name)[:60]
        return f"{self.task}--{slug}--{digest}"

    def describe(self) -> str:
        return f"{self.task} with {self.model.name} ({len(self.keys)} experiment(s))"


def make_jobs(planned: Iterable) -> list[Job]:
    """Group `Planned` items (status "run") into jobs, model by model, in plan order."""
    groups: dict[tuple[Model, str], list] = {}
    for p in planned:
        groups.setdefault((p.experiment.model, p.task), []).append(p)
    jobs = [Job(m, t, tuple(p.experiment for p in ps), tuple(p.key for p in ps)) for (m, t), ps in groups.items()]
    order = {m: i for i, m in enumerate(dict.fromkeys(j.model for j in jobs))}
    return sorted(jobs, key=lambda j: order[j.model])


# Outboxes: the only way results leave a job


def key_file(key: ExperimentKey) -> str:
    return hashlib.sha256(key.to_json().encode()).hexdigest()[:24] + REPORT_SUFFIX


def write_report(outbox: Path, report: Report) -> Path:
    """Put one finished experiment in `outbox`: all of it or nothing (temporary file, fsync, rename)."""
    outbox.mkdir(parents=True, exist_ok=True)
    final = outbox / key_file(report.key)
    tmp = outbox / f".tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as fd:
            pickle.dump(report, fd, protocol=pickle.HIGHEST_PROTOCOL)
            fd.flush()
            os.fsync(fd.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def ingest(outbox: Path, store: Store, on_stored: Callable[[Report], None] = lambda r: None) -> int:
    """Store every report in `outbox` (one transaction each), deleting each file once stored. Returns how many were new."""
    n = 0
    if not outbox.is_dir():
        return 0
    for path in sorted(outbox.glob(f"*{REPORT_SUFFIX}")):
        try:
            report = pickle.loads(path.read_bytes())
        except Exception as err:  # renamed into place whole, so only a damaged disk gets here
            logger.warning("Result file %s cannot be read (%s); moved aside, its experiment will run again.", path, err)
            os.replace(path, path.with_suffix(".damaged"))
            continue
        if store.write(report):
            n += 1
            on_stored(report)
        path.unlink(missing_ok=True)
    return n


# The worker side


_BACKBONE: tuple[Model, object] | None = None
"""The backbone a worker process has loaded (kept between jobs of the same model)."""


def _setup_worker(cfg: Config) -> None:
    """Make this process know what the launcher knew: its plugins and `[tasks.NAME]` tables (shipped with the config,
    so a config built with `config.from_dict` works as well as a file, and an edited file cannot change a job)."""
    from biobench.plugins import load_plugins
    from biobench.tasks import user

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    base = cfg.base or (Path(cfg.source).parent.resolve() if cfg.source is not None else Path.cwd())
    load_plugins(cfg.settings.plugins, base)
    for name, table in cfg.user_tasks.items():
        user.declare(name, table, base)


def run_job(cfg: Config, job: Job, outbox: Path) -> int:
    """Run `job` (in a worker), each finished experiment into `outbox`; experiments already there are skipped. Returns how many ran."""
    global _BACKBONE
    from biobench.routes import load_model, probe_reports, text_reports

    _setup_worker(cfg)
    have = {p.name for p in outbox.glob(f"*{REPORT_SUFFIX}")} if outbox.is_dir() else set()
    todo = [(e, k) for e, k in zip(job.experiments, job.keys, strict=True) if key_file(k) not in have]
    if not todo:
        return 0
    if _BACKBONE is None or _BACKBONE[0] != job.model:
        _BACKBONE = None
        _BACKBONE = (job.model, load_model(job.model, cfg.settings.resolved_device()))
    reports = text_reports if job.model.method == "zero-shot" else probe_reports
    n = 0
    for report in reports(_BACKBONE[1], job.task, [e for e, _ in todo], [k for _, k in todo], cfg):
        write_report(outbox, report)
        n += 1
    return n


def _job_entry(cfg: Config, job: Job, outbox: str) -> int:
    return run_job(cfg, job, Path(outbox))


SHARD_PREFIX = "shard"


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """Embed shard `shard` of `n_shards` of a large task's images into the feature cache (no experiment runs), ahead of
    the (model, task) evaluation job `of`, which then finds the complete feature set cached."""

    of: Job
    shard: int
    n_shards: int

    @property
    def name(self) -> str:
        return f"{SHARD_PREFIX}{self.shard + 1}of{self.n_shards}--{self.of.name}"

    @property
    def keys(self) -> tuple[ExperimentKey, ...]:
        """The evaluation job's keys: while a shard job lives, they count as covered (a rerun submits nothing for them)."""
        return self.of.keys

    def describe(self) -> str:
        return f"{self.of.task} with {self.of.model.name}, embedding shard {self.shard + 1}/{self.n_shards}"


def is_shard(name: str) -> bool:
    return name.startswith(SHARD_PREFIX) and "of" in name.split("--", 1)[0]


def run_shard(cfg: Config, job: ShardJob) -> int:
    """Run a shard job (in a worker): embed its images that are not cached yet. Returns how many it embedded."""
    global _BACKBONE
    from biobench.cache import FeatureCache
    from biobench.embed import embed_shard
    from biobench.routes import embed_settings, load_model
    from biobench.tasks import get_task

    _setup_worker(cfg)
    model = job.of.model
    if _BACKBONE is None or _BACKBONE[0] != model:
        _BACKBONE = None
        _BACKBONE = (model, load_model(model, cfg.settings.resolved_device()))
    examples = get_task(job.of.task).read(cfg.task_options_for(job.of.task))
    cache = FeatureCache(cfg.settings.resolved_cache_dir())
    return embed_shard(_BACKBONE[1], examples.images, cache, embed_settings(cfg), job.shard, job.n_shards)


def run_units(cfg: Config, units: Sequence[Job | ShardJob], outbox_root: Path) -> int:
    """Run a submitted job's units in order (one backbone load per model): experiments into their outboxes, shards into the cache."""
    n = 0
    for unit in units:
        n += run_shard(cfg, unit) if isinstance(unit, ShardJob) else run_job(cfg, unit, outbox_root / unit.name)
    return n


class SubmititJob:
    """What submitit runs; on pre-emption or time-out it requeues itself (submitit's checkpointing), and the requeued
    job skips the experiments already in its outboxes (and the images already in the cache)."""

    def __call__(self, cfg: Config, units: Sequence[Job | ShardJob], outbox_root: str) -> int:
        return run_units(cfg, units, Path(outbox_root))

    def checkpoint(self, cfg: Config, units: Sequence[Job | ShardJob], outbox_root: str):
        import submitit

        return submitit.helpers.DelayedSubmission(SubmititJob(), cfg, units, outbox_root)


# The pool


def pool_size(cfg: Config) -> tuple[int, list[str]]:
    """(workers, the GPU each is pinned to, or [] on CPU)."""
    device = cfg.settings.resolved_device()
    gpus: list[str] = []
    if device.startswith("cuda"):
        import torch

        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = [g for g in visible.split(",") if g.strip()] if visible else [str(i) for i in range(torch.cuda.device_count())]
    n = cfg.settings.pool_size or (len(gpus) if gpus else 2)
    return n, gpus


def _pool_init(gpu_queue) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_queue.get()


def run_pool(
    jobs: Sequence[Job],
    cfg: Config,
    outbox_root: Path,
    on_done: Callable[[Job, BaseException | None], None],
    on_progress: Callable[[], None] = lambda: None,
) -> None:
    """Run `jobs` on worker processes; `on_done(job, error)` in the launcher as each finishes (after its outbox is final)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    n, gpus = pool_size(cfg)
    n = max(1, min(n, len(jobs)))
    ctx = mp.get_context("spawn")  # a fresh interpreter: no forked torch threads or CUDA state
    queue = None
    if gpus:
        queue = ctx.Manager().Queue()
        for i in range(n):
            queue.put(gpus[i % len(gpus)])
    logger.info("Pool: %d worker(s)%s for %d job(s).", n, f" on GPUs {', '.join(gpus[:n])}" if gpus else " on CPU", len(jobs))
    with cf.ProcessPoolExecutor(n, mp_context=ctx, initializer=_pool_init, initargs=(queue,)) as pool:
        futures = {pool.submit(run_job, cfg, job, outbox_root / job.name): job for job in jobs}
        try:
            pending = set(futures)
            while pending:
                done, pending = cf.wait(pending, timeout=2.0, return_when=cf.FIRST_COMPLETED)
                on_progress()
                for f in done:
                    on_done(futures[f], f.exception())
        except BaseException:
            for f in futures:
                f.cancel()
            raise


# The launcher side: pool and slurm runs, reattaching, status


def jobs_folder(cfg: Config) -> Path:
    """Where job scripts, logs and outboxes go: `[slurm] folder`, else REPORT_TO/jobs (next to the database)."""
    return cfg.settings.slurm.folder or cfg.settings.report_to / "jobs"


def ingest_all(folder: Path, store: Store, on_stored: Callable[[Report], None] = lambda r: None) -> int:
    """Store what earlier jobs left in their outboxes (a launcher that was killed or detached)."""
    root = folder / "outbox"
    if not root.is_dir():
        return 0
    return sum(ingest(d, store, on_stored) for d in sorted(root.iterdir()) if d.is_dir())


FINISHED = ("done", "failed")


class _Launch:
    """One launcher's bookkeeping over its jobs: ingest outboxes, count, record states."""

    def __init__(self, cfg: Config, store: Store, summary, n_todo: int):
        from biobench.console import print_result

        self.cfg, self.store, self.summary, self.n_todo = cfg, store, summary, n_todo
        self.folder = jobs_folder(cfg)
        self.outbox = self.folder / "outbox"
        self._print = print_result
        self.board: JobBoard | None = None

    def stored(self, report: Report) -> None:
        self.summary.run += 1
        self.summary.answers_failed += report.n_failed or 0
        self._print(report, f"[{self.summary.run + self.summary.failed}/{self.n_todo}]")
        if self.board is not None:
            self.board.add_stored()

    def drain(self, name: str) -> None:
        ingest(self.outbox / name, self.store, self.stored)

    def finish(self, name: str, keys: Sequence[ExperimentKey], what: str, error: str | None, log_path: str | None = None) -> None:
        """A job ended: ingest its last reports; what it did not store is failed (with its error, stored with the job)."""
        self.drain(name)
        missing = [k for k in keys if not self.store.has(k)]
        if error is None and missing:
            error = f"the job ended without results for {len(missing)} experiment(s)"
        if not missing:
            self.store.set_job_state(name, "done")
            return
        self.summary.failed += len(missing)
        where = f" (log: {log_path})" if log_path else ""
        last = error.strip().splitlines()[-1] if error.strip() else error
        self.summary.errors.append(f"{what}: {last}{where}")
        logger.error("%s failed%s:\n%s", what, where, error.rstrip())
        self.store.set_job_state(name, "failed", error=error, log_path=log_path)


def run_pool_jobs(jobs: Sequence[Job], cfg: Config, store: Store, summary, n_todo: int) -> None:
    """executor = "pool": run `jobs` on worker processes here, storing reports as they arrive."""
    import traceback

    launch = _Launch(cfg, store, summary, n_todo)
    for job in jobs:
        store.put_job(job.name, str(os.getpid()), "pool", str(launch.folder), job.keys, state="running")

    def on_done(job: Job, err: BaseException | None) -> None:
        text = None if err is None else "".join(traceback.format_exception(err))
        launch.finish(job.name, job.keys, job.describe(), text)

    def on_progress() -> None:
        for job in jobs:
            launch.drain(job.name)

    run_pool(jobs, cfg, launch.outbox, on_done, on_progress)


def _submitit_executor(cfg: Config, folder: Path, time_min: int | None = None):
    import submitit

    s = cfg.settings.slurm
    time_min = time_min or s.time_min
    logs = folder / "logs" / "%j"
    if s.cluster == "local":
        ex = submitit.LocalExecutor(folder=logs, max_num_timeout=s.max_requeue)
        gpus = s.gpus_per_job if cfg.settings.resolved_device().startswith("cuda") else 0
        ex.update_parameters(timeout_min=time_min, gpus_per_node=gpus, signal_delay_s=min(30, time_min * 15))
        return ex
    ex = submitit.SlurmExecutor(folder=logs, max_num_timeout=s.max_requeue)
    params = {
        "job_name": "biobench",
        "time": time_min,
        "gpus_per_node": (0 if cfg.settings.device == "cpu" else s.gpus_per_job) or None,  # device = "cpu": no GPU asked
        "cpus_per_task": s.cpus_per_job,
        "mem": f"{s.mem_gb}GB",
        "partition": s.partition,
        "account": s.account,
        "qos": s.qos,
        "constraint": s.constraint,
        "array_parallelism": s.array_parallelism,
        "signal_delay_s": min(90, time_min * 15),
        "additional_parameters": s.additional_parameters() or None,
    }
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def _handle(cluster: str, folder: str, job_id: str):
    import submitit

    if cluster == "slurm":
        return submitit.SlurmJob(folder=folder, job_id=job_id)
    return submitit.LocalJob(folder=folder, job_id=job_id)


_QUEUED = frozenset({"PENDING", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED"})
_RUNNING = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "UNKNOWN", "PREEMPTED"})
# UNKNOWN: not yet in the accounting; PREEMPTED: about to be requeued. Anything else (COMPLETED, CANCELLED, FAILED,
# TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...) has ended; the job's result file says how.


def squeue_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """Slurm's state of each job, from `squeue` (which, unlike submitit's `sacct`, needs no accounting database);
    a job squeue no longer lists (ended more than MinJobAge ago) is "ENDED". None when squeue cannot answer."""
    import subprocess

    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    cmd = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", f"--jobs={','.join(ids)}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        logger.warning("squeue did not answer (%s); job states come from sacct instead.", err)
        return None
    if out.returncode != 0:
        if "invalid job id" in out.stderr.lower():  # every job asked about is gone from the controller
            return dict.fromkeys(ids, "ENDED")
        logger.warning("squeue failed (%s); job states come from sacct instead.", out.stderr.strip() or out.returncode)
        return None
    states = dict.fromkeys(ids, "ENDED")
    for line in out.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id in states:
            states[job_id] = state.split()[0].rstrip("+") if state.strip() else "UNKNOWN"
    return states


_ASK = object()


def job_state(cluster: str, handle, states=_ASK) -> str:
    """queued / running / ended (then see `job_error`). `states`: `squeue_states` of many jobs at once."""
    if cluster == "local":
        return "running" if _pid_running(int(str(handle.job_id).split("_")[0])) else "ended"
    job_id = str(handle.job_id)
    if states is _ASK:
        states = squeue_states([job_id])
    state = states[job_id] if states is not None and job_id in states else str(handle.state).upper()  # else sacct, via submitit
    if state in _QUEUED:
        return "queued"
    if state in _RUNNING:
        return "running"
    return "ended"


def job_error(handle) -> str | None:
    """None when the job returned; else its error (traceback, or why it has no result)."""
    path = handle.paths.result_pickle
    try:
        tag, value = pickle.loads(path.read_bytes())
    except FileNotFoundError:
        return f"job {handle.job_id} ended without a result (cancelled, killed, pre-empted too often or out of memory)"
    except Exception as err:
        return f"job {handle.job_id}: its result file {path} cannot be read: {err}"
    return None if tag == "success" else str(value)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


class JobBoard:
    """What a launcher waiting on jobs shows: off a terminal (Slurm logs, CI), one log line per job state change; on a
    terminal, one live line instead (experiments stored out of all, jobs queued / running / done / failed), with the
    results and errors printed above it."""

    STATES = ("queued", "running", "done", "failed")

    def __init__(self, n_experiments: int, *, tty: bool | None = None, file=None):
        self.n = n_experiments
        self.stored = 0
        self.states: dict[str, str] = {}
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._bar = self._redirect = None
        if self.tty:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=n_experiments, desc="experiments", unit="exp", file=file or sys.stderr, dynamic_ncols=True,
                             mininterval=0, leave=True)  # fmt: skip
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()

    def jobs_line(self) -> str:
        """e.g. `jobs: 1 queued, 2 running, 4 done, 0 failed`."""
        counts = {s: 0 for s in self.STATES}
        for state in self.states.values():
            counts[state] = counts.get(state, 0) + 1
        return "jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items())

    def change(self, name: str, job_id: str, state: str) -> None:
        """Job `name` (Slurm id `job_id`) is now `state`; nothing happens if it already was."""
        if self.states.get(name) == state:
            return
        first = name not in self.states
        self.states[name] = state
        if self._bar is not None:
            self._bar.set_postfix_str(self.jobs_line())
        elif not (first and state == "queued"):  # its submission was logged already
            logger.info("Job %s (%s): %s", job_id, name, state)

    def add_stored(self, n: int = 1) -> None:
        self.stored += n
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._redirect.__exit__(None, None, None)
            self._bar = None


# Sizing: what each submitted job runs, its estimate and its time limit (`biobench.jobcost`)


@dataclasses.dataclass(frozen=True)
class Submission:
    """One submitted job: what it runs, in order, its estimated seconds and the time limit it asks for."""

    units: tuple[Job | ShardJob, ...]
    seconds: float
    time_min: int

    def describe(self) -> str:
        return "; ".join(u.describe() for u in self.units)


@dataclasses.dataclass(frozen=True)
class SlurmPlan:
    """What a launcher submits: `now` at once (shard jobs, and evaluation jobs with nothing to wait for), and
    `after` -- evaluation jobs of large tasks -- once the shard jobs named for each have ended."""

    now: tuple[Submission, ...]
    after: tuple[tuple[Job, frozenset[str]], ...] = ()


def stored_fingerprints(rows: Iterable[dict]) -> dict[tuple[str, str], str]:
    """(model org, recorded ckpt) -> the backbone fingerprint its latest stored experiment recorded."""
    out: dict[tuple[str, str], str] = {}
    for row in sorted(rows, key=lambda r: r.get("posix_time") or 0.0):
        if row.get("backbone_fingerprint"):
            out[(row["model_org"], row["model_ckpt"])] = row["backbone_fingerprint"]
    return out


def cached_mask(model: Model, images, cfg: Config, fingerprints: dict[tuple[str, str], str]):
    """Which of `images` the feature cache holds for `model` (valid chunks only), without loading the model: the cache
    key comes from the fingerprint its stored experiments recorded, else from the cache's own record of its backbones
    (org and ckpt). An estimate: a cache entry of other weights under the same name counts as cached."""
    import numpy as np

    from biobench.cache import FeatureCache, _read_json
    from biobench.embed import _cache_key, resolve_decode

    s = cfg.settings
    device = s.resolved_device()
    cache = FeatureCache(s.resolved_cache_dir())
    fp = fingerprints.get((model.org, model.key_ckpt))
    if fp is not None:
        candidates = [_cache_key(fp, device, d) for d in dict.fromkeys((resolve_decode(s.decode, device), "exact"))]
    elif cache.base.is_dir():
        name = f"{model.org}:{model.ckpt}" + ("" if model.pretrained else "#random-init")  # as the backbone records it
        candidates = [p.name for p in sorted(cache.base.iterdir()) if p.is_dir() and _read_json(p / "backbone.json").get("name") == name]
    else:
        candidates = []
    candidates = [c for c in candidates if cache.backbone_dir(c).is_dir()]
    best = np.zeros(len(images), dtype=bool)
    keys = images.keys(s.cache_keys) if candidates else None  # nothing cached: no need to key (or hash) the images
    for key in candidates:
        _, found = cache.lookup(key, keys)
        if found.sum() > best.sum():
            best = found
    return best


def _submission(cfg: Config, units: Sequence[Job | ShardJob], seconds: float) -> Submission:
    from biobench import jobcost

    s = cfg.settings.slurm
    return Submission(tuple(units), seconds, jobcost.time_limit(seconds, s.time_safety, s.min_time_min, s.time_min))


def pack_jobs(cfg: Config, jobs: Sequence[Job], seconds: Sequence[float]) -> list[Submission]:
    """Evaluation jobs (in plan order) packed into submitted jobs of about `[slurm] target_job_min` each."""
    from biobench import jobcost

    models = [j.model for j in jobs]
    out = []
    for group in jobcost.pack(seconds, models, cfg.settings.slurm.target_job_min * 60.0):
        est = jobcost.group_seconds([seconds[i] for i in group], [models[i] for i in group])
        out.append(_submission(cfg, [jobs[i] for i in group], est))
    return out


def size_jobs(jobs: Sequence[Job], cfg: Config, rows: Sequence[dict], examples: dict) -> SlurmPlan:
    """Estimate each job, split the large tasks into shard jobs, pack the rest and set every time limit.

    `rows`: the store's experiments (`Store.rows()`, for measured costs and fingerprints); `examples`: each task's
    data (read by the launcher already), whose images are looked up in the feature cache."""
    from biobench import jobcost
    from biobench.embed import shard_rows

    costs = jobcost.measured(rows)
    fps = stored_fingerprints(rows)
    device = cfg.settings.resolved_device()
    shard_images = cfg.settings.slurm.shard_images
    ready: list[Job] = []
    seconds: list[float] = []
    shards: list[Submission] = []
    after: list[tuple[Job, frozenset[str]]] = []
    for job in jobs:
        images = examples[job.task].images if job.task in examples else None
        found = cached_mask(job.model, images, cfg, fps) if images is not None else None
        n_todo = int((~found).sum()) if found is not None else 0
        per_image = jobcost.s_per_image(costs, job.model.org, job.model.key_ckpt, device)
        if n_todo > shard_images:
            n = jobcost.n_shards(len(images), shard_images)
            units = []
            for i in range(n):
                todo = int((~found[shard_rows(len(images), i, n)]).sum())
                if todo:
                    unit = ShardJob(job, i, n)
                    units.append(unit.name)
                    shards.append(_submission(cfg, [unit], todo * per_image + jobcost.LOAD_S))
            after.append((job, frozenset(units)))
            continue
        ready.append(job)
        seconds.append(jobcost.job_seconds(costs, job.model.org, job.model.key_ckpt, job.task, device, n_todo, len(job.keys)))
    return SlurmPlan(tuple(shards + pack_jobs(cfg, ready, seconds)), tuple(after))


def size_after_shards(jobs: Sequence[Job], cfg: Config, rows: Sequence[dict]) -> list[Submission]:
    """Evaluation jobs whose shard jobs have ended: their images are cached, so they cost their probes only."""
    from biobench import jobcost

    costs = jobcost.measured(rows)
    device = cfg.settings.resolved_device()
    seconds = [jobcost.job_seconds(costs, j.model.org, j.model.key_ckpt, j.task, device, 0, len(j.keys)) for j in jobs]
    return pack_jobs(cfg, jobs, seconds)


def plan_lines(plan: SlurmPlan, cfg: Config) -> list[str]:
    """The dry run's account of what `executor = "slurm"` would submit."""
    out = []
    for i, sub in enumerate(plan.now, 1):
        out.append(f"slurm job {i}: time limit {sub.time_min} min (estimated {sub.seconds / 60:.1f} min): {sub.describe()}")
    for job, shards in plan.after:
        out.append(f"then, after its {len(shards)} shard job(s): {job.describe()}")
    s = cfg.settings.slurm
    out.append(
        f"slurm: {len(plan.now) + len(plan.after)} job(s); limits are estimates x {s.time_safety:g}, "
        f"between {min(s.min_time_min, s.time_min)} and {s.time_min} min; small jobs packed up to {s.target_job_min} min"
    )
    return out


def _submit(cfg: Config, launch: _Launch, subs: Sequence[Submission], live: dict) -> int:
    """Submit `subs` (one job array per time limit), record every unit in the store's jobs table and in `live`."""
    cluster = cfg.settings.slurm.cluster
    folder = str(launch.folder / "logs" / "%j")
    by_limit: dict[int, list[Submission]] = {}
    for sub in subs:
        by_limit.setdefault(sub.time_min, []).append(sub)
    for limit, group in sorted(by_limit.items()):
        ex = _submitit_executor(cfg, launch.folder, limit)
        handles = ex.map_array(SubmititJob(), [cfg] * len(group), [sub.units for sub in group], [str(launch.outbox)] * len(group))
        for sub, handle in zip(group, handles, strict=True):
            for unit in sub.units:
                launch.store.put_job(unit.name, str(handle.job_id), cluster, folder, unit.keys)
                live[unit.name] = (handle, cluster, list(unit.keys), "queued")
            logger.info(
                "Submitted job %s (time limit %d min, estimated %.1f min): %s", handle.job_id, limit, sub.seconds / 60, sub.describe()
            )
    return len(subs)


def _eval_name(shard_name: str) -> str:
    return shard_name.split("--", 1)[1]


def run_slurm_jobs(
    jobs: Sequence[Job], cfg: Config, store: Store, summary, n_todo: int, *, detach: bool = False, examples: dict | None = None
) -> None:
    """executor = "slurm": reattach to this database's live jobs, submit the rest (sized by `size_jobs`: shard jobs of
    large tasks first, their evaluation jobs once the shards have ended), then wait and ingest.

    With `detach`, return once submitted; a rerun ingests and reattaches (and submits what waited for shards)."""
    launch = _Launch(cfg, store, summary, n_todo)
    live: dict[str, tuple[object, str, list[ExperimentKey], str]] = {}  # name -> handle, cluster, keys, last state
    rows = [r for r in store.jobs() if r["state"] not in FINISHED and r["cluster"] in ("slurm", "local")]
    states = squeue_states(r["job_id"] for r in rows if r["cluster"] == "slurm")
    for row in rows:
        handle = _handle(row["cluster"], row["folder"], row["job_id"])
        if (
            job_state(row["cluster"], handle, states) == "ended"
        ):  # ended while no launcher watched: collect it; what it lacks is resubmitted
            error = job_error(handle)
            log = None if error is None else str(handle.paths.stderr)
            if is_shard(row["name"]):
                store.set_job_state(row["name"], "done" if error is None else "failed", error=error, log_path=log)
                continue
            launch.drain(row["name"])
            missing = [k for k in row["keys"] if not store.has(k)]
            if error is None and missing:
                error = f"the job ended without results for {len(missing)} experiment(s)"
            store.set_job_state(row["name"], "failed" if missing else "done", error=error if missing else None, log_path=log)
            if missing:
                logger.warning("Job %s ended unfinished (%s; log: %s); its %d missing experiment(s) are submitted again.",
                               row["job_id"], (error or "").strip().splitlines()[-1:], log, len(missing))  # fmt: skip
            continue
        live[row["name"]] = (handle, row["cluster"], row["keys"], row["state"])
    covered = {k for name, (_, _, keys, _) in live.items() if not is_shard(name) for k in keys}
    shards_of: dict[str, set[str]] = {}
    for name in live:
        if is_shard(name):
            shards_of.setdefault(_eval_name(name), set()).add(name)
    new = [j for j in jobs if not set(j.keys) <= covered and j.name not in live and j.name not in shards_of]
    after = {j.name: (j, frozenset(shards_of[j.name])) for j in jobs if j.name in shards_of and j.name not in live}
    if live:
        logger.info("Reattached to %d job(s) still queued or running.", len(live))
    if new:
        plan = size_jobs(new, cfg, store.rows(), examples or {})
        summary.jobs_submitted += _submit(cfg, launch, plan.now, live)
        after.update((j.name, (j, names)) for j, names in plan.after)
    summary.jobs_live = len(live)
    if detach:
        return
    every: dict[str, Job | ShardJob] = {j.name: j for j in jobs}
    board = launch.board = JobBoard(
        len({k for name, (_, _, keys, _) in live.items() for k in keys if not is_shard(name) and not store.has(k)}
            | {k for j, _ in after.values() for k in j.keys if not store.has(k)})
    )  # fmt: skip
    for name, (handle, _, _, last) in live.items():
        board.change(name, str(handle.job_id), last)
    try:
        while live or after:
            states = squeue_states(str(h.job_id) for h, kind, _, _ in live.values() if kind == "slurm")
            for name in list(live):
                handle, kind, keys, last = live[name]
                if not is_shard(name):
                    launch.drain(name)
                state = job_state(kind, handle, states)
                if state != "ended":
                    if state != last:
                        board.change(name, str(handle.job_id), state)
                        store.set_job_state(name, state)
                        live[name] = (handle, kind, keys, state)
                    continue
                error = job_error(handle)
                log = None if error is None else str(handle.paths.stderr)
                if is_shard(name):
                    store.set_job_state(name, "done" if error is None else "failed", error=error, log_path=log)
                    if error is not None:
                        logger.warning("Shard job %s failed (log: %s); its evaluation job embeds what it lacks.", handle.job_id, log)
                    board.change(name, str(handle.job_id), "done" if error is None else "failed")
                    del live[name]
                    continue
                what = every[name].describe() if name in every else f"job {handle.job_id}"
                launch.finish(name, keys, what, error, log)
                board.change(name, str(handle.job_id), "done" if error is None and all(store.has(k) for k in keys) else "failed")
                del live[name]
            ready = [j for j, names in after.values() if not names & set(live)]
            if ready:  # their shard jobs have ended: the features are cached
                for j in ready:
                    del after[j.name]
                summary.jobs_submitted += _submit(cfg, launch, size_after_shards(ready, cfg, store.rows()), live)
                for j in ready:
                    board.change(j.name, str(live[j.name][0].job_id), "queued")
                continue
            if live:
                time.sleep(cfg.settings.slurm.poll_s)
    finally:
        board.close()


def status_rows(store: Store) -> list[dict]:
    """Every job of the database with its current state (asked of Slurm, or of the process table), nothing written."""
    out = []
    done = store.done_keys()
    rows = store.jobs()
    states = squeue_states(r["job_id"] for r in rows if r["state"] not in FINISHED and r["cluster"] == "slurm")
    for row in rows:
        state = row["state"]
        if state not in FINISHED and row["cluster"] in ("slurm", "local"):
            handle = _handle(row["cluster"], row["folder"], row["job_id"])
            now = job_state(row["cluster"], handle, states)
            if now == "ended":
                error = job_error(handle)
                state = "done" if error is None else "failed"
                if error is not None:
                    row = {**row, "error": error, "log_path": str(handle.paths.stderr)}
            else:
                state = now
        elif state not in FINISHED:  # a pool run's jobs live as long as their launcher
            from biobench.store import _pid_alive

            state = state if _pid_alive(int(row["job_id"])) else "failed"
        outbox = (
            Path(row["folder"]).parent.parent / "outbox" / row["name"]
            if "%j" in row["folder"]
            else Path(row["folder"]) / "outbox" / row["name"]
        )
        waiting = len(list(outbox.glob(f"*{REPORT_SUFFIX}"))) if outbox.is_dir() else 0
        n_done = sum(k in done for k in row["keys"])
        out.append({**row, "state": state, "n_done": n_done, "n_waiting": waiting})
    return out
