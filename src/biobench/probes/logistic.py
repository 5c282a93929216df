"""L2-regularised logistic regression in torch (L-BFGS), the optimum of scikit-learn's `LogisticRegression`.

Objective, as scikit-learn's default (lbfgs, penalty "l2", intercept not penalised):
1/2 |W|^2 + C sum_i loss_i, with the softmax cross-entropy over all classes, or, for two
classes, one logit and the binary cross-entropy (scikit-learn fits the binomial model
then, which is a different optimum from a two-column softmax). Used as a probe where a
calibrated score is wanted (e.g. P(hybrid)); runs on CPU or CUDA.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from jaxtyping import Float, Int

from biobench.probes import labels


@dataclasses.dataclass(frozen=True)
class LogisticModel:
    """A fitted model: logits = x @ coef.T + intercept."""

    classes: np.ndarray
    """Class labels; with two classes the single logit is that of classes[1]."""
    coef: Float[np.ndarray, "k d"]
    """Weights; k = 1 for two classes, else one row per class."""
    intercept: Float[np.ndarray, " k"]
    """Biases."""

    def predict_proba(self, x: Float[np.ndarray, "m d"]) -> Float[np.ndarray, "m c"]:
        logits = np.asarray(x, dtype=np.float64) @ self.coef.T + self.intercept
        if len(self.classes) == 2:
            p1 = 1 / (1 + np.exp(-logits[:, 0]))
            return np.stack([1 - p1, p1], axis=1)
        logits -= logits.max(1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(1, keepdims=True)

    def predict(self, x: Float[np.ndarray, "m d"]) -> np.ndarray:
        return self.classes[self.predict_proba(x).argmax(1)]


def fit(
    x: Float[np.ndarray, "n d"],
    y: Int[np.ndarray, " n"],
    *,
    c: float = 1.0,
    max_iter: int = 500,
    tol: float = 1e-10,
    device: str | torch.device = "cpu",
) -> LogisticModel:
    """Fit by full-batch L-BFGS with a strong-Wolfe line search, in float64."""
    classes, codes = labels.encode(x, y, "Logistic regression")
    xt = torch.as_tensor(np.asarray(x), device=device).to(torch.float64)
    target = torch.as_tensor(codes, device=xt.device)
    k = 1 if len(classes) == 2 else len(classes)
    w = torch.zeros(k, xt.shape[1], dtype=torch.float64, device=xt.device, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, device=xt.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=tol * 1e-3, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        logits = xt @ w.T + b
        if k == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target.to(torch.float64), reduction="sum")
        else:
            loss = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
        obj = 0.5 * (w * w).sum() + c * loss
        obj.backward()
        return obj

    opt.step(closure)
    return LogisticModel(classes, w.detach().cpu().numpy(), b.detach().cpu().numpy())
