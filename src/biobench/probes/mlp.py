"""A small MLP trained for multi-label traits (FishNet's protocol).

Khan et al. "FishNet: A Large-scale Dataset and Benchmark for Fish Recognition, Detection,
and Functional Trait Prediction." ICCV 2023. The seed's head is d -> 512 -> k, Adam (lr
5e-4), binary cross-entropy, 100 epochs. Two seed bugs are fixed: its MLP had no
nonlinearity (two stacked linear layers are one linear map), and it thresholded logits at
0.5 instead of probabilities (sigmoid(logit) > 0.5, i.e. logit > 0). Seeded, CPU or CUDA.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from jaxtyping import Float, Int

from biobench.probes import threads as _threads


@dataclasses.dataclass(frozen=True)
class MlpConfig:
    """Training settings (defaults: the seed's FishNet recipe)."""

    hidden: int = 512
    """Hidden layer width."""
    dropout: float = 0.5
    """Dropout before the output layer."""
    lr: float = 5e-4
    """Adam learning rate."""
    epochs: int = 100
    """Passes over the training set."""
    batch_size: int = 256
    """Examples per step."""
    threshold: float = 0.5
    """A trait is predicted present when its probability exceeds this."""


def fit_predict(
    x_train: Float[np.ndarray, "n d"],
    y_train: Int[np.ndarray, "n k"],
    x_test: Float[np.ndarray, "m d"],
    *,
    seed: int = 0,
    cfg: MlpConfig = MlpConfig(),
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> tuple[Int[np.ndarray, "m k"], Float[np.ndarray, "m k"]]:
    """Train on (x_train, multi-hot y_train); return (0/1 predictions, probabilities) for x_test.

    On CPU, trains with `threads` torch threads (None: `biobench.probes.threads.choose` from the step's size).
    """
    y_train = np.asarray(y_train)
    if y_train.ndim != 2 or len(y_train) != len(x_train):
        raise ValueError(f"y_train must be (n, k) multi-hot for {len(x_train)} rows; got shape {y_train.shape}.")
    if torch.device(device).type != "cpu":
        return _fit_predict(x_train, y_train, x_test, seed=seed, cfg=cfg, device=device)
    d, k = np.shape(x_train)[1], y_train.shape[1]
    macs = min(cfg.batch_size, len(y_train)) * (d * cfg.hidden + cfg.hidden * k)
    n = threads if threads is not None else _threads.choose(macs, default=torch.get_num_threads())
    with _threads.limited(n):
        return _fit_predict(x_train, y_train, x_test, seed=seed, cfg=cfg, device=device)


def _fit_predict(x_train, y_train, x_test, *, seed: int, cfg: MlpConfig, device) -> tuple[np.ndarray, np.ndarray]:
    """`fit_predict` with the thread setting as it is."""
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(np.asarray(x_train), dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.float32)
    d, k = xt.shape[1], yt.shape[1]
    torch.manual_seed(seed)  # layer initialisation
    model = torch.nn.Sequential(
        torch.nn.Linear(d, cfg.hidden), torch.nn.ReLU(), torch.nn.Dropout(cfg.dropout), torch.nn.Linear(cfg.hidden, k)
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(xt), generator=gen)
        for lo in range(0, len(xt), cfg.batch_size):
            rows = order[lo : lo + cfg.batch_size]
            opt.zero_grad()
            loss_fn(model(xt[rows].to(device)), yt[rows].to(device)).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        prob = torch.sigmoid(model(torch.as_tensor(np.asarray(x_test), dtype=torch.float32).to(device))).cpu().numpy()
    return (prob > cfg.threshold).astype(np.int64), prob
