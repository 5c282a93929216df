"""`biobench train run | export | fixture`: thin wrappers over `biobench.train` (imported on demand)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Literal

import tyro

from biobench.train.loop import TrainConfig
from biobench.train.slurm import SlurmLaunch


@dataclasses.dataclass(frozen=True)
class TrainSbatch:
    """Write (and optionally submit) an sbatch script that runs `biobench train run` on Slurm nodes under torchrun."""

    train: TrainConfig
    """The training run (the flags of `biobench train run`); the script always adds --resume, so requeued jobs continue."""
    sbatch_out: Path
    """Where to write the script."""
    slurm: SlurmLaunch = SlurmLaunch()
    """Nodes, GPUs per node, time limit, partition... (`--nodes 4 --gpus-per-node 8`)."""
    submit: bool = False
    """Also run `sbatch SBATCH_OUT` and print the job id."""


@dataclasses.dataclass(frozen=True)
class TrainExport:
    """Export a training checkpoint as open_clip `local-dir:` folders, one per visual projector."""

    checkpoint: Path
    """A checkpoint written by `biobench train run` (RUN/checkpoints/latest.pt)."""
    out: Path
    """Folder to write; gets OUT/tax and/or OUT/caption."""
    projector: Literal["tax", "caption", "both"] = "both"
    """Which head becomes the exported model's `visual.proj` (evaluate with open-clip:local-dir:OUT/tax)."""


@dataclasses.dataclass(frozen=True)
class TrainFixture:
    """Write generated TreeOfLife-10M-format shards and a TreeOfLife-10M-Captions-format table."""

    dir: Path
    seed: int = 0
    n_shards: int = 3
    per_shard: int = 24


@dataclasses.dataclass(frozen=True)
class TrainSubmit:
    """Submit the training through submitit (one task per GPU on each node; requeued with resume on pre-emption)."""

    train: TrainConfig
    """The training run (the flags of `biobench train run`); every (re)start resumes from the last checkpoint."""
    slurm: SlurmLaunch = SlurmLaunch()
    """Nodes, GPUs per node, time limit, partition..."""
    cluster: Literal["slurm", "local"] = "slurm"
    """'local': submitit's LocalExecutor (GPUS_PER_NODE local processes on this machine), the same code path."""
    wait: bool = False
    """Wait for the job and print its summary."""


def export_checkpoint(checkpoint: Path, out: Path, projector: str = "both") -> list[Path]:
    import torch

    from biobench.train import model as model_mod

    blob = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model, *_ = model_mod.build(blob["config"]["model"])
    model.load_state_dict(blob["model"])
    heads = ("tax", "caption") if projector == "both" else (projector,)
    return [model_mod.export(model, blob["model_cfg"], Path(out) / p, p) for p in heads]


def train(
    cmd: Annotated[TrainConfig, tyro.conf.subcommand("run")]
    | Annotated[TrainExport, tyro.conf.subcommand("export")]
    | Annotated[TrainFixture, tyro.conf.subcommand("fixture")]
    | Annotated[TrainSbatch, tyro.conf.subcommand("sbatch")]
    | Annotated[TrainSubmit, tyro.conf.subcommand("submit")],
) -> int:
    """BioCAP-style CLIP training (taxonomic names + captions, two visual projectors); launch under torchrun for DDP."""
    if isinstance(cmd, TrainFixture):
        from biobench.train.fixture import make_tol_shards

        fx = make_tol_shards(cmd.dir, seed=cmd.seed, n_shards=cmd.n_shards, per_shard=cmd.per_shard)
        print(f"Wrote shards {fx['shards']} and captions {fx['captions']}")
        return 0
    if isinstance(cmd, TrainSbatch):
        from biobench import atomic
        from biobench.train.slurm import sbatch_script

        (Path(cmd.train.out) / "slurm").mkdir(parents=True, exist_ok=True)  # sbatch does not create its log folder
        atomic.write_text(Path(cmd.sbatch_out), sbatch_script(cmd.train, cmd.slurm))
        Path(cmd.sbatch_out).chmod(0o755)
        print(f"Wrote {cmd.sbatch_out} ({cmd.slurm.nodes} node(s) x {cmd.slurm.gpus_per_node} GPU(s))")
        if cmd.submit:
            import subprocess

            done = subprocess.run(["sbatch", "--parsable", str(cmd.sbatch_out)], capture_output=True, text=True)
            if done.returncode:
                print(f"sbatch {cmd.sbatch_out} failed: {done.stderr.strip()}")
                return done.returncode
            print(f"Submitted job {done.stdout.strip()}")
        return 0
    if isinstance(cmd, TrainSubmit):
        from biobench.train.slurm import submit

        job = submit(cmd.train, cmd.slurm, cluster=cmd.cluster)
        print(f"Submitted job {job.job_id}; logs in {Path(cmd.train.out) / 'slurm' / str(job.job_id)}")
        if cmd.wait:
            summary = job.results()[0]  # rank 0's
            print(json.dumps({k: v for k, v in summary.items() if k != "losses"}))
        return 0
    if isinstance(cmd, TrainExport):
        for path in export_checkpoint(cmd.checkpoint, cmd.out, cmd.projector):
            print(f"Exported {path}: evaluate it as open-clip:local-dir:{path}")
        return 0
    from biobench.train.loop import train as run_training

    summary = run_training(cmd)
    print(json.dumps({k: v for k, v in summary.items() if k != "losses"} | {"last_loss": (summary["losses"] or [None])[-1]}))
    return 0
