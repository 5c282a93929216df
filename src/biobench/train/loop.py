"""The training loop: one process, or one per device under `torchrun` (DDP; NCCL on GPUs, gloo on CPU).

Global batch = per_device_batch x world size x accumulation steps. The contrastive loss sees the whole
global batch: features are all-gathered across ranks (open_clip's `ClipLoss`), and accumulation caches
the other micro-batches' features without gradients and recomputes one micro-batch at a time with them,
as open_clip does, so the loss (and, with `gather_with_grad`, the gradient) equals one big batch's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from biobench.errors import ConfigError, DataError
from biobench.train import data as data_mod
from biobench.train import evaluate as evaluate_mod
from biobench.train import model as model_mod
from biobench.train import sinks

logger = logging.getLogger("biobench.train")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Options of `biobench train run`."""

    shards: str
    """TreeOfLife-10M-format webdataset shards: a brace pattern ('dir/shard-{000000..000159}.tar'), `::`-joined."""
    captions: Path
    """TreeOfLife-10M-Captions-format table (parquet or CSV with columns uuid, caption)."""
    out: Path
    """Run directory: checkpoints/latest.pt, metrics.jsonl, export/{tax,caption}/."""
    model: str = model_mod.TINY
    """open_clip architecture (a built-in name, `hf-hub:ORG/REPO` or `local-dir:PATH`); the default is a tiny CPU CLIP."""
    pretrained: str | None = None
    """open_clip pretrained tag or weights file to start from (e.g. 'openai', as BioCAP does); none = random init."""
    steps: int = 100
    """Optimiser steps in all (the schedule's length)."""
    stop_after: int | None = None
    """Stop (after a checkpoint) once this many steps are done; a later run with --resume continues."""
    per_device_batch: int = 8
    accum: int = 1
    """Micro-batches per optimiser step (gradient accumulation)."""
    lr: float = 5e-4
    warmup: int = 10
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    caption_weight: float = 1.0
    """Weight of the caption-projector loss: loss = L_tax + caption_weight * L_caption."""
    seed: int = 0
    shuffle_buffer: int = 1000
    forms: tuple[str, ...] = data_mod.NAME_FORMS
    """Name forms drawn per sample (uniformly among those the sample has)."""
    split: Literal["samples", "shards"] = "samples"
    """How ranks share the data: 'samples' (same batches as one process) or 'shards' (scales to many nodes)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """'auto': bf16 autocast on CUDA, fp32 on CPU."""
    grad_checkpointing: bool = False
    local_loss: bool = False
    """open_clip's local loss: local features against gathered ones (less memory, same gradient)."""
    gather_with_grad: bool = True
    """Back-propagate through the feature all-gather (exact gradient; open_clip's option of that name)."""
    checkpoint_every: int = 50
    resume: bool = False
    """Continue from OUT/checkpoints/latest.pt when it exists."""
    device: str = "auto"
    threads: int | None = None
    """torch CPU threads per process (1 avoids oversubscription when several processes share few cores)."""
    num_workers: int = 0
    """DataLoader worker processes decoding and augmenting samples (0 = in the training process). The batches do
    not depend on it: position p of an epoch's stream is decoded by worker p mod num_workers, and the workers'
    outputs are taken back in position order, so resume, DDP and any worker count see the same steps."""
    eval_every: int = 0
    """Evaluate the model on `eval_tasks` every this many steps and after the last (0 = never); rank 0 only."""
    eval_tasks: tuple[str, ...] = ()
    """biobench text-route tasks (zero-shot / retrieval) as TASK=DATA_DIR, e.g. nabirds=/data/nabirds."""
    eval_projector: Literal["tax", "caption"] = "tax"
    """The visual projector whose features the evaluation uses."""
    eval_bootstrap: int = 200
    """Bootstrap resamples for the evaluation scores' intervals."""
    tensorboard: bool = True
    """Write TensorBoard event files to OUT/tensorboard/ when the `tensorboard` package is installed."""
    wandb_project: str | None = None
    """Log to Weights & Biases under this project (needs `pip install wandb`; not a biobench dependency)."""
    wandb_mode: Literal["offline", "online"] = "offline"
    """W&B mode: 'offline' writes OUT/wandb/ for a later `wandb sync`."""


def _dist() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's split: no weight decay on gains, biases and logit scales."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def train_step(model, ddp, micro, opt, cfg: TrainConfig, device, autocast, rank: int, world: int) -> dict[str, float]:
    """One optimiser step over `micro` (a list of micro-batches); returns the (global-batch) losses."""
    kw = dict(rank=rank, world=world, local_loss=cfg.local_loss, gather_with_grad=cfg.gather_with_grad)
    opt.zero_grad(set_to_none=True)
    move = lambda b: (b.images.to(device), b.names.to(device), b.captions.to(device))  # noqa: E731
    if len(micro) == 1:
        with autocast():
            losses = model_mod.dual_loss(ddp(*move(micro[0])), cfg.caption_weight, **kw)
        losses["loss"].backward()
    else:
        with torch.no_grad(), autocast():
            cached = [model(*move(b)) for b in micro]
        for j, b in enumerate(micro):
            sync = ddp.no_sync() if world > 1 and j < len(micro) - 1 else contextlib.nullcontext()
            with sync, autocast():
                out = ddp(*move(b))
                inputs = {k: torch.cat([out[k] if i == j else c[k] for i, c in enumerate(cached)]) for k in model_mod.FEATURE_KEYS}
                for k in ("scale_tax", "scale_caption"):  # the scales' gradient is counted once, not once per micro-batch
                    inputs[k] = out[k] if j == 0 else out[k].detach()
                losses = model_mod.dual_loss(inputs, cfg.caption_weight, **kw)
            losses["loss"].backward()
    opt.step()
    model.clamp_scales()
    vals = torch.stack([losses[k].detach().float() for k in ("loss", "loss_tax", "loss_caption")])
    if world > 1:
        torch.distributed.all_reduce(vals)
        vals /= world
    return dict(zip(("loss", "loss_tax", "loss_caption"), vals.tolist()))


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, blob: dict) -> None:
    """torch.save to a temporary file beside `path`, then rename over it: never a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) per `cfg`; returns {'step', 'losses': [...], 'skipped': {...}, 'export': {...}}."""
    rank, world, local_rank = _dist()
    # options checked on every rank, before any collective: a rank-0-only error would leave the others waiting
    eval_tasks = evaluate_mod.parse_tasks(cfg.eval_tasks) if cfg.eval_every and cfg.eval_tasks else {}
    if cfg.eval_every and not cfg.eval_tasks:
        raise ConfigError("eval_every is set but eval_tasks is empty: give --eval-tasks TASK=DATA_DIR (e.g. nabirds=/data/nabirds).")
    sinks.check(cfg.wandb_project)
    cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model, train_tf, _, tokenizer, mcfg = model_mod.build(cfg.model, cfg.pretrained, grad_checkpointing=cfg.grad_checkpointing)
    model.to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if cuda else None) if world > 1 else model
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.warmup, cfg.steps))

    out = Path(cfg.out)
    ckpt_path = out / "checkpoints" / "latest.pt"
    step = epoch = in_epoch = 0
    epoch_start_counts = data_mod.SkipCounts()
    if cfg.resume and ckpt_path.is_file():
        blob = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        sched.load_state_dict(blob["scheduler"])
        _set_rng_state(blob["rng"])
        step, epoch, in_epoch = blob["step"], blob["epoch"], blob["in_epoch"]
        epoch_start_counts = data_mod.SkipCounts(**blob["counts_at_epoch_start"])
        logger.info("Resumed %s at step %d (epoch %d, step %d of it).", ckpt_path, step, epoch, in_epoch)
    metrics = evaluator = None
    if rank == 0:
        plain = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()}
        kw = dict(tensorboard=cfg.tensorboard, wandb_project=cfg.wandb_project, wandb_mode=cfg.wandb_mode, run_name=out.name, config=plain)
        metrics = sinks.Metrics(out, resume_step=step, **kw)
        if eval_tasks:
            evaluator = evaluate_mod.Evaluator(
                eval_tasks, out, projector=cfg.eval_projector, device=str(device), n_bootstrap=cfg.eval_bootstrap
            )

    captions = data_mod.read_captions(cfg.captions)
    scfg = data_mod.StreamConfig(data_mod.expand_shards(cfg.shards), cfg.seed, cfg.shuffle_buffer, tuple(cfg.forms), cfg.split)
    counts = dataclasses.replace(epoch_start_counts)  # the replayed part of the epoch recounts its skips
    end = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
    losses: list[float] = []

    def checkpoint() -> None:
        if rank == 0:
            blob = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": _rng_state(),
                "step": step,
                "epoch": epoch,
                "in_epoch": in_epoch,
                "counts_at_epoch_start": epoch_start_counts.as_dict(),
                "config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()},
                "model_cfg": mcfg,
            }
            save_checkpoint(ckpt_path, blob)

    model.train()
    if evaluator is not None and step == 0:
        metrics.log(evaluator(model, mcfg, 0))  # the starting point, for comparison
    while step < end:
        got = 0
        tick = time.perf_counter()
        kw = dict(per_device=cfg.per_device_batch, accum=cfg.accum, transform=train_tf, tokenizer=tokenizer, counts=counts)
        kw |= dict(rank=rank, world=world, start=in_epoch, num_workers=cfg.num_workers)
        for micro in data_mod.steps(scfg, captions, epoch, **kw):
            got += 1
            vals = train_step(model, ddp, micro, opt, cfg, device, autocast, rank, world)
            sched.step()
            step += 1
            in_epoch += 1
            losses.append(vals["loss"])
            now = time.perf_counter()
            if rank == 0:
                row = {"step": step, "epoch": epoch, **vals, "lr": opt.param_groups[0]["lr"]}
                row |= {"scale_tax": model.clip.logit_scale.exp().item(), "scale_caption": model.logit_scale_caption.exp().item()}
                row |= {"samples_per_s": cfg.per_device_batch * cfg.accum * world / max(now - tick, 1e-9), "skipped": counts.as_dict()}
                metrics.log(row)
                if evaluator is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                    metrics.log(evaluator(model, mcfg, step))
                    now = time.perf_counter()  # the evaluation's time is not the next step's
            tick = now
            if step % cfg.checkpoint_every == 0 or step == end:
                checkpoint()
            if step >= end:
                break
        else:
            if got == 0 and in_epoch == 0:
                raise DataError(
                    f"The shards hold too few usable samples for one step of {cfg.per_device_batch * world * cfg.accum} "
                    f"(skipped: {counts.as_dict()}). Lower --per-device-batch/--accum or add data."
                )
            epoch += 1
            in_epoch = 0
            epoch_start_counts = dataclasses.replace(counts)
            logger.info("Epoch %d done at step %d; skipped so far: %s", epoch, step, counts.as_dict())
    if metrics is not None:
        metrics.close()
    exported = {}
    if rank == 0 and step >= cfg.steps:
        for proj in ("tax", "caption"):
            exported[proj] = str(model_mod.export(model, mcfg, out / "export" / proj, proj))
    if world > 1:
        torch.distributed.barrier()
    return {"step": step, "losses": losses, "skipped": counts.as_dict(), "export": exported}
