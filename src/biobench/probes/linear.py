"""A linear soft-max probe trained by SGD: LayerNorm, then one linear layer (the original biobench's `LinearProbeClassifier`).

AdamW on the cross-entropy, weight decay on the linear weights only (not the bias or
the LayerNorm's scale and shift), a cosine learning-rate decay from `lr` to `lr / 100`
over a fixed number of steps, mini-batches drawn by a seeded shuffle that restarts every
pass. Herbarium19's probe. Float32, CPU or CUDA, deterministic for a seed on CPU.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from jaxtyping import Float, Int

from biobench.probes import labels
from biobench.probes import threads as _threads


@dataclasses.dataclass(frozen=True)
class LinearConfig:
    """Training settings (defaults: the original biobench's)."""

    steps: int = 10_000
    """Optimiser steps."""
    batch_size: int = 2048
    """Examples per step (the whole training set when smaller)."""
    lr: float = 3e-4
    """Peak learning rate."""
    weight_decay: float = 1e-2
    """AdamW weight decay on the linear layer's weights."""


def cosine_lr(step: int, steps: int, lr: float, final: float) -> float:
    """The learning rate after `step` of `steps` (1-based): cosine from `lr` to `final`."""
    return final + 0.5 * (lr - final) * (1 + math.cos(step / steps * math.pi))


def fit_predict(
    x_train: Float[np.ndarray, "n d"],
    y_train: Int[np.ndarray, " n"],
    x_test: Float[np.ndarray, "m d"],
    *,
    seed: int = 0,
    cfg: LinearConfig = LinearConfig(),
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> tuple[np.ndarray, Float[np.ndarray, "m c"]]:
    """Train on (x_train, y_train); return the predicted labels and class probabilities of x_test.

    On CPU, trains with `threads` torch threads (None: `biobench.probes.threads.choose` from the step's size).
    """
    classes, codes = labels.encode(x_train, y_train, "The linear probe")
    if torch.device(device).type != "cpu":
        return _fit_predict(x_train, classes, codes, x_test, seed=seed, cfg=cfg, device=device)
    macs = min(cfg.batch_size, len(codes)) * np.shape(x_train)[1] * len(classes)
    n = threads if threads is not None else _threads.choose(macs, default=torch.get_num_threads())
    with _threads.limited(n):
        return _fit_predict(x_train, classes, codes, x_test, seed=seed, cfg=cfg, device=device)


def _fit_predict(x_train, classes, codes, x_test, *, seed: int, cfg: LinearConfig, device) -> tuple[np.ndarray, np.ndarray]:
    """`fit_predict` on encoded labels (`codes` index `classes`), with the thread setting as it is."""
    torch.manual_seed(seed)  # layer initialisation
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(np.asarray(x_train), dtype=torch.float32, device=device)
    yt = torch.as_tensor(codes, device=device)
    model = torch.nn.Sequential(torch.nn.LayerNorm(xt.shape[1]), torch.nn.Linear(xt.shape[1], len(classes))).to(device)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    model.train()
    order, pos = torch.randperm(len(xt), generator=gen), 0
    for step in range(1, cfg.steps + 1):
        if pos >= len(order):
            order, pos = torch.randperm(len(xt), generator=gen), 0
        rows = order[pos : pos + cfg.batch_size].to(xt.device)
        pos += cfg.batch_size
        loss = torch.nn.functional.cross_entropy(model(xt[rows]), yt[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.lr * 1e-2)
    model.eval()
    with torch.no_grad():
        prob = torch.softmax(model(torch.as_tensor(np.asarray(x_test), dtype=torch.float32, device=device)), dim=1).cpu().numpy()
    return classes[prob.argmax(1)], prob
