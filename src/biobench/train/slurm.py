"""A generated sbatch script for multi-node training: `biobench train sbatch ... --sbatch-out job.sh [--submit]`.

One Slurm task per node (`srun --ntasks-per-node=1`), each running `torchrun --nproc_per_node GPUS` with the
c10d rendezvous on the job's first node (`MASTER_ADDR` from `scontrol show hostnames $SLURM_JOB_NODELIST`,
rendezvous id = the job id), so global rank = node x GPUs + local rank and world = nodes x GPUs.

Requeue: the job is `--requeue`able (a partition whose PreemptMode is REQUEUE puts a pre-empted job back in
the queue), and `--signal=B:USR1@GRACE` makes Slurm signal the batch shell GRACE seconds before the time
limit; the script traps USR1 and runs `scontrol requeue $SLURM_JOB_ID`. The training command always carries
`--resume`, so every (re)start continues from OUT/checkpoints/latest.pt (at most `checkpoint_every` steps
are redone; resume is exact). A plain scancel (SIGTERM) is not trapped: it ends the job for good. The logs are
opened in append mode (a requeued job would otherwise truncate what its earlier starts wrote).

CPU-only nodes: `gpus_per_node=0` asks for no GPU and `procs_per_node` sets torchrun's process count (gloo).
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

from biobench.train.loop import TrainConfig


@dataclasses.dataclass(frozen=True)
class SlurmLaunch:
    """The Slurm side of `biobench train sbatch`."""

    nodes: int = 1
    """Nodes (one torchrun per node)."""
    gpus_per_node: int = 1
    """GPUs per node = torchrun processes per node (0: CPU only, no GPU requested; the processes use gloo)."""
    procs_per_node: int | None = None
    """torchrun processes per node; none = gpus_per_node (1 when that is 0)."""
    cpus_per_node: int = 8
    """CPUs of each node's task (DataLoader workers + the training processes)."""
    mem: str | None = None
    """Memory per node, as sbatch takes it ('256G'); none = the partition's default."""
    time: str = "24:00:00"
    """Time limit per (re)start; the job requeues itself shortly before it."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    job_name: str = "biobench-train"
    port: int = 29500
    """Rendezvous port on the first node."""
    grace: int = 180
    """Seconds before the time limit at which the job requeues itself (USR1)."""
    setup: tuple[str, ...] = ()
    """Shell lines run before training (e.g. 'source /path/venv/bin/activate', 'module load cuda')."""
    python: str = sys.executable
    """Interpreter on the nodes (runs torchrun and `-m biobench.cli train run`); default: the one writing the script."""

    @property
    def nproc(self) -> int:
        """torchrun processes per node."""
        return self.procs_per_node or max(1, self.gpus_per_node)


def train_args(cfg: TrainConfig) -> list[str]:
    """`biobench train run` flags reproducing `cfg` (fields that differ from the defaults, plus the required ones)."""
    args: list[str] = []
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        has_default = f.default is not dataclasses.MISSING
        if has_default and value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{f.name.replace('_', '-')}")
        elif value is None:
            args += [flag, "None"]
        elif isinstance(value, tuple):
            args += [flag, *map(str, value)] if value else [flag]
        else:
            args += [flag, str(value)]
    return args


def sbatch_script(cfg: TrainConfig, launch: SlurmLaunch) -> str:
    """The sbatch script text (see the module docstring)."""
    cfg = dataclasses.replace(cfg, resume=True)
    log_dir = Path(cfg.out) / "slurm"
    lines = ["#!/bin/bash", f"#SBATCH --job-name={launch.job_name}", f"#SBATCH --nodes={launch.nodes}", "#SBATCH --ntasks-per-node=1"]
    if launch.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={launch.gpus_per_node}")
    lines.append(f"#SBATCH --cpus-per-task={launch.cpus_per_node}")
    lines += [f"#SBATCH --time={launch.time}", f"#SBATCH --output={log_dir}/%x-%j.out", f"#SBATCH --error={log_dir}/%x-%j.err"]
    # append: a requeued job writes the same log files, and would otherwise truncate what the earlier starts wrote
    lines += ["#SBATCH --open-mode=append", "#SBATCH --requeue", f"#SBATCH --signal=B:USR1@{launch.grace}"]
    for key in ("mem", "partition", "account", "qos"):
        if getattr(launch, key):
            lines.append(f"#SBATCH --{key}={getattr(launch, key)}")
    lines += ["", "set -eu", *launch.setup, ""]
    lines += [
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"MASTER_PORT={launch.port}",
        "export MASTER_ADDR MASTER_PORT",
        f"export OMP_NUM_THREADS={max(1, launch.cpus_per_node // launch.nproc)}",
        "",
        "requeue() {",
        '    echo "biobench: USR1 (time limit near); requeueing job $SLURM_JOB_ID (it resumes from the last checkpoint)"',
        '    scontrol requeue "$SLURM_JOB_ID"',
        "}",
        "trap requeue USR1",
        "",
    ]
    torchrun = [launch.python, "-m", "torch.distributed.run", "--nnodes", str(launch.nodes), "--nproc_per_node", str(launch.nproc)]
    torchrun += ["--rdzv_backend", "c10d", "--rdzv_id", "$SLURM_JOB_ID", "--rdzv_endpoint", "$MASTER_ADDR:$MASTER_PORT"]
    command = torchrun + ["-m", "biobench.cli", "train", "run", *train_args(cfg)]
    quoted = " ".join(f'"{a}"' if a.startswith("$") else shlex.quote(a) for a in command)  # Slurm variables expand
    lines += [f"srun --ntasks-per-node=1 --kill-on-bad-exit=1 {quoted} &", "wait $!", ""]
    return "\n".join(lines)


class SubmititTrain:
    """What submitit runs in each of its tasks (one per GPU): the torch.distributed environment from Slurm's
    (submitit's `TorchDistributedEnvironment`: MASTER_ADDR = first host, RANK, WORLD_SIZE, LOCAL_RANK), then
    `train(cfg, resume=True)`. On pre-emption or time-out submitit calls `checkpoint`, which requeues the same
    call: it resumes from the last checkpoint (bounded by the executor's `max_num_timeout`)."""

    def __call__(self, cfg: TrainConfig) -> dict:
        import submitit

        from biobench.train.loop import train

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        summary = train(dataclasses.replace(cfg, resume=True))
        return {k: v for k, v in summary.items() if k != "losses"} | {"losses": summary["losses"]}

    def checkpoint(self, cfg: TrainConfig):
        import submitit

        return submitit.helpers.DelayedSubmission(SubmititTrain(), cfg)


def submit(cfg: TrainConfig, launch: SlurmLaunch, *, cluster: str = "slurm", max_requeue: int = 10):
    """Submit the training through submitit: one job of `nodes` x `gpus_per_node` tasks (`cluster="local"`: one
    node's tasks as local processes, the same code path). Returns the submitit job (its result: rank 0's summary)."""
    import submitit

    folder = Path(cfg.out) / "slurm" / "%j"
    if cluster == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=max_requeue)
        ex.update_parameters(tasks_per_node=launch.nproc, nodes=1, timeout_min=_minutes(launch.time))
    else:
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeue)
        ex.update_parameters(**submitit_parameters(launch))
    return ex.submit(SubmititTrain(), cfg)


def submitit_parameters(launch: SlurmLaunch) -> dict:
    """`submitit.SlurmExecutor` parameters: one task per GPU (submitit starts them with srun; no torchrun)."""
    params = dict(nodes=launch.nodes, ntasks_per_node=launch.nproc)
    if launch.gpus_per_node:
        params["gpus_per_node"] = launch.gpus_per_node
    params |= dict(cpus_per_task=max(1, launch.cpus_per_node // launch.nproc), time=_minutes(launch.time), job_name=launch.job_name)
    params |= {k: getattr(launch, k) for k in ("mem", "partition", "account", "qos") if getattr(launch, k)}
    params["signal_delay_s"] = launch.grace
    if launch.setup:
        params["setup"] = list(launch.setup)
    return params


def _minutes(time: str) -> int:
    """Slurm's [D-]HH:MM:SS (or MM) as whole minutes."""
    days, _, rest = time.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    h, m, s = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return max(1, (int(days or 0) * 24 + h) * 60 + m + (1 if s else 0))
