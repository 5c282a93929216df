"""Command line: `biobench run | report | status | tasks | models | demo | fixture | download | cache | challenge | wiki | captions | train`.

Each command is a thin function over the library; errors a user can fix print one clear
message (no traceback) and exit 1; Ctrl-C exits 130 after saving what is finished.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro

from biobench.captions.commands import captions, wiki
from biobench.challenge.commands import OptionalPath, challenge
from biobench.errors import BiobenchError

TaskName = Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="TASK")]

logger = logging.getLogger("biobench")


def run(
    config: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="CONFIG.toml")],
    dry_run: bool = False,
    max_usd: Annotated[float | None, tyro.conf.arg(metavar="USD")] = None,
    executor: Literal["local", "pool", "slurm"] | None = None,
    detach: bool = False,
) -> int:
    """Run every experiment of a config that is not already in its results database.

    Args:
        config: The TOML config file (see README: [[models]], [data], n_train, seeds, ...).
        dry_run: Print what would run, and why the rest is skipped (done / no data / no code), then stop.
        max_usd: Stop cleanly once MLLM requests have cost this many US dollars (exit code 3); a rerun resumes.
        executor: Override the config's executor: local (this process), pool (worker processes), slurm (submitit).
        detach: With executor slurm: submit the jobs and return; `biobench status` shows them, rerunning collects them.
    """
    from biobench import config as config_mod
    from biobench import runner

    cfg = config_mod.load(config)
    if executor is not None:
        cfg = dataclasses.replace(cfg, settings=dataclasses.replace(cfg.settings, executor=executor))
    summary = runner.run(cfg, dry_run=dry_run, max_usd=max_usd, detach=detach)
    if summary.interrupted:
        return 130
    if summary.budget_stopped:
        return 3
    if summary.failed:
        print(f"{summary.failed} experiment(s) failed:", file=sys.stderr)
        for err in summary.errors:
            print(f"  - {err}", file=sys.stderr)
        return 1
    return 0


def report(
    db: Path = Path("results/results.sqlite"),
    format: Literal["table", "csv", "json", "html"] = "table",
    out: OptionalPath = None,
    tasks: tuple[str, ...] = (),
    models: tuple[str, ...] = (),
    n_train: int | None = None,
    method: tuple[str, ...] = (),
) -> int:
    """Leaderboard with confidence intervals, tie groups and rank intervals from a results database.

    Args:
        db: The results database (REPORT_TO/results.sqlite of a config).
        format: table (leaderboard, then every n_train), csv or json (one row per experiment, plus mean rows),
            html (one self-contained page: leaderboard, sub-scores, curves, task correlations, provenance).
        out: Write here instead of standard output.
        tasks: Only these tasks (names or shell globs).
        models: Only these models, as ORG:CKPT (shell globs allowed, e.g. 'openai:*').
        n_train: Only this training-set size (-1 = all); the leaderboard defaults to all, else the largest run.
        method: Only these methods (cvml, mllm, mllm/single, mllm/multi).
    """
    from biobench import report as report_mod

    rows = report_mod.select(report_mod.load(db), tasks=tasks, models=models, n_train=n_train, methods=method)
    tty = out is None and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    text = report_mod.render(rows, format, db, tty=tty)
    if out is None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        out.write_text(text if text.endswith("\n") else text + "\n")
        print(f"Wrote {out}", file=sys.stderr)
    return 0


def status(db: Path = Path("results/results.sqlite")) -> int:
    """Jobs of the pool and slurm executors: queued / running / done / failed, with job ids, errors and log paths.

    Args:
        db: The results database (REPORT_TO/results.sqlite of a config).
    """
    from biobench.executors import is_shard, status_rows
    from biobench.store import Store

    with Store(db, readonly=True) as store:
        rows = status_rows(store)
        n_stored = len(store.done_keys())
    if not rows:
        print(f"No jobs recorded in {db} ({n_stored} experiment(s) stored); jobs appear here with executor = pool or slurm.")
        return 0
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
        waiting = f", {r['n_waiting']} result(s) to collect (rerun)" if r["n_waiting"] else ""
        what = "embeds images into the feature cache" if is_shard(r["name"]) else f"{r['n_done']}/{len(r['keys'])} stored{waiting}"
        print(f"{r['state']:<8} {r['cluster']:<6} job {r['job_id']:<12} {r['name']}  {what}")
        if r["state"] == "failed":
            last = (r.get("error") or "").strip().splitlines()
            print(f"         error: {last[-1] if last else '?'}" + (f"  (log: {r['log_path']})" if r.get("log_path") else ""))
    print(", ".join(f"{counts.get(s, 0)} {s}" for s in ("queued", "running", "done", "failed")) + f"; {n_stored} experiment(s) stored")
    return 0


def tasks(config: OptionalPath = None) -> int:
    """List every task: kind, probe, headline metric, routes, and whether its data is found.

    Args:
        config: A config file: its plugins and [tasks.NAME] tables add tasks, and its [data] (or a table's data)
            gives the directory checked; a task it does not place is looked for at data/TASK in this directory.
    """
    from biobench.config import data_dirs
    from biobench.tasks import get_task, task_names

    dirs = data_dirs(config) if config is not None else {}
    rows = [("task", "kind", "probe", "metric", "routes", "data", "")]
    for name in task_names():
        spec = get_task(name)
        routes = f"[{', '.join(spec.routes)}]"
        rows.append((name, spec.kind, _probe_name(spec), spec.metric.name, routes, _data_status(name, dirs), spec.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print(("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[6]).rstrip())
    return 0


def _probe_name(spec) -> str:
    """The probe's short name; a probe the options pick is shown for the default options."""
    from biobench.probes import Probe

    if spec.probe is None:
        if spec.evaluate is not None:
            return "custom"
        return "text-image" if spec.supports("text") else "-"  # similarity to the text tower's embeddings
    if isinstance(spec.probe, Probe):
        return spec.probe.display_name()
    try:
        return spec.probe_for(spec.options(data=Path("data") / spec.name)).display_name()
    except Exception:  # options without defaults: the chooser's declared return type, if any
        import typing

        ret = typing.get_type_hints(spec.probe).get("return")
        return ret.display_name() if isinstance(ret, type) and issubclass(ret, Probe) else "(options)"


def _data_status(name: str, dirs) -> str:
    """'found PATH' / 'not found PATH' / 'skipped' for the directory a config gives, else data/NAME."""
    if name in dirs and dirs[name] is None:
        return 'skipped ("" in [data])'
    path = dirs.get(name) or Path("data") / name
    return f"{'found' if path.is_dir() else 'not found'}: {path}"


def models() -> int:
    """List backbone orgs (ORG in ORG:CKPT) and the checkpoints each accepts."""
    from biobench.backbones import backbone_class, list_vision_backbones

    for org in list_vision_backbones():
        doc = (backbone_class(org).__doc__ or "").strip().splitlines()
        print(f"{org:<12} {doc[0] if doc else ''}")
    print(
        "\nExamples: open-clip:ViT-B-16/openai  open-clip:hf-hub:imageomics/bioclip  "
        "timm:vit_base_patch14_reg4_dinov2.lvd142m  torchvision:resnet50/IMAGENET1K_V2  hf:facebook/dinov2-base  builtin:pixel-stats"
    )
    from biobench.mllm.registry import REGISTRY

    print('\nMultimodal LLMs (method = "mllm"; others need context_tokens in their [[models]] entry):')
    for (org, ckpt), spec in sorted(REGISTRY.items()):
        print(f"  {org}:{ckpt:<42} {spec.context_tokens:>9,} tokens  ${spec.usd_per_m_input}/${spec.usd_per_m_output} per M in/out")
    return 0


def demo(out: Path = Path("biobench-demo")) -> int:
    """Offline end-to-end run on generated data with weight-free backbones.

    Args:
        out: Directory for the generated data, cache, results.sqlite and report.html.
    """
    from biobench import demo as demo_mod

    summary = demo_mod.demo(out)
    return 130 if summary.interrupted else (1 if summary.failed else 0)


def fixture(task: TaskName, dir: Path, seed: int = 0, shuffle_labels: bool = False, config: OptionalPath = None) -> int:
    """Write a small generated dataset in a task's real on-disk format.

    Args:
        task: Task name (see `biobench tasks`).
        dir: Directory to write (created if needed).
        seed: Seeds the images, ids and labels.
        shuffle_labels: Permute labels so that no image carries its label's signal (a chance-level control).
        config: A config whose plugins and [tasks.NAME] tables define the task (an example of your table's layout).
    """
    if task == "tol-shards":  # training data (TreeOfLife-10M shards + captions), not an evaluation task
        from biobench.train.fixture import make_tol_shards

        fx = make_tol_shards(dir, seed=seed)
        print(f"Wrote generated TreeOfLife-10M-format shards {fx['shards']} and captions {fx['captions']}")
        return 0
    from biobench.tasks import get_task

    if config is not None:
        from biobench.config import data_dirs

        data_dirs(config)  # imports its plugins, registers its [tasks.NAME] tables

    get_task(task).fixture(dir, seed=seed, shuffle_labels=shuffle_labels)
    print(f"Wrote a generated {task} dataset to {dir}")
    return 0


def download(task: TaskName, dir: Path) -> int:
    """Download a task's dataset, verify its checksums and lay it out as the task expects.

    Args:
        task: Task name (see `biobench tasks`).
        dir: Directory to download into; the path to give under [data] in a config.
    """
    from biobench.tasks import get_task

    spec = get_task(task)
    if not spec.downloadable:
        raise BiobenchError(f"biobench cannot download {task} yet; see the task's documentation for where to get it.")
    spec.fetch(dir)
    print(f'Downloaded {task} to {dir}. Use it with:\n\n[data]\n{task} = "{dir}"')
    return 0


@dataclasses.dataclass(frozen=True)
class CacheLs:
    """List cached features: model, dataset, images, dimension, size on disk."""

    cache_dir: OptionalPath = None
    """Cache root (default $BIOBENCH_CACHE, else ~/.cache/biobench)."""


@dataclasses.dataclass(frozen=True)
class CacheRm:
    """Delete cached features of one model (and/or dataset), or all of them."""

    cache_dir: OptionalPath = None
    """Cache root (default $BIOBENCH_CACHE, else ~/.cache/biobench)."""
    model: Annotated[str | None, tyro.conf.arg(metavar="ORG:CKPT")] = None
    """ORG:CKPT whose features to delete."""
    dataset: Annotated[str | None, tyro.conf.arg(metavar="TASK")] = None
    """Dataset (task) whose features to delete."""
    all: bool = False
    """Delete every cached feature."""


@dataclasses.dataclass(frozen=True)
class CacheVerify:
    """Check every cached chunk in full (sizes, shapes, checksums); move damaged ones aside to be recomputed."""

    cache_dir: OptionalPath = None
    """Cache root (default $BIOBENCH_CACHE, else ~/.cache/biobench)."""


def cache(
    cmd: Annotated[CacheLs, tyro.conf.subcommand("ls")]
    | Annotated[CacheRm, tyro.conf.subcommand("rm")]
    | Annotated[CacheVerify, tyro.conf.subcommand("verify")],
) -> int:
    """Inspect, check or clear the feature cache."""
    from biobench.cache import FeatureCache

    store = FeatureCache(cmd.cache_dir)
    if isinstance(cmd, CacheLs):
        entries = store.entries()
        if not entries:
            print(f"No cached features in {store.root}.")
            return 0
        rows = [("model", "dataset", "images", "dim", "size", "status")] + [
            (
                e.model,
                e.dataset,
                f"{e.n_images:,}",
                str(e.dim),
                _human_bytes(e.bytes),
                f"{e.damaged} damaged chunk(s)" if e.damaged else "ok",
            )
            for e in entries
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        print(f"\n{store.root}: {_human_bytes(sum(e.bytes for e in entries))} in all")
        if any(e.damaged for e in entries):
            print("Damaged chunks are recomputed on the next run; `biobench cache verify` moves them aside now.")
        return 0
    if isinstance(cmd, CacheVerify):
        checked, bad = store.verify()
        for damaged in bad:
            print(f"damaged: {damaged.chunk} ({damaged.reason})")
        print(f"Checked {checked} chunk(s) in {store.root}: {len(bad)} damaged" + (" (moved aside; rerun to recompute)." if bad else "."))
        return 1 if bad else 0
    if not (cmd.all or cmd.model or cmd.dataset):
        raise BiobenchError("Say what to delete: --model ORG:CKPT, --dataset TASK, or --all.")
    if cmd.model is not None and cmd.model not in store.models():
        known = ", ".join(store.models()) or "none"
        raise BiobenchError(f"No cached features of model {cmd.model} in {store.root}; cached models: {known}.")
    freed = store.remove(model=cmd.model, dataset=cmd.dataset)
    print(f"Freed {_human_bytes(freed)} from {store.root}.")
    return 0


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def train(*args, **kwargs) -> int:
    """BioCAP-style CLIP training: `biobench train run | export | fixture` (see `biobench train --help`)."""
    raise AssertionError("replaced by _train_command() in main()")


COMMANDS = {
    "run": run,
    "report": report,
    "tasks": tasks,
    "models": models,
    "demo": demo,
    "fixture": fixture,
    "download": download,
    "status": status,
    "cache": cache,
    "challenge": challenge,
    "wiki": wiki,
    "captions": captions,
    "train": train,
}


def _lazy(args: list[str]) -> dict:
    """COMMANDS, with `train` resolved only when it is the command given (it imports torch and open_clip)."""
    if args[:1] != ["train"]:
        return COMMANDS
    from biobench.train.commands import train as train_command

    return COMMANDS | {"train": train_command}


def main(argv: list[str] | None = None) -> int:
    level = os.environ.get("BIOBENCH_LOG", "INFO").upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("PIL", "urllib3", "httpx", "huggingface_hub", "timm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["-V"]):
        import importlib.metadata

        print(f"biobench {importlib.metadata.version('biobench')}")
        return 0
    try:
        rc = tyro.extras.subcommand_cli_from_dict(
            _lazy(args),
            prog="biobench",
            description="Which frozen vision model works best on your biology images, and how sure are we?",
            args=args,
            config=(tyro.conf.OmitSubcommandPrefixes, tyro.conf.OmitArgPrefixes),
        )
    except BiobenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
