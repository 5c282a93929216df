"""k-nearest neighbours on features (cosine or Euclidean), with leave-one-out for re-identification.

The Beluga re-identification protocol of biobench is leave-one-out 1-NN: every image is a
query against all others, and it scores when its nearest other image shows the same
individual (the seed compared a neighbour's *index* with the query's *label*; we compare
labels). Neighbours are found in torch, in query batches, on CPU or CUDA; identical to
scikit-learn's `NearestNeighbors` / `KNeighborsClassifier` (tested).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int

Metric = Literal["cosine", "euclidean"]


def neighbours(
    x_query: Float[np.ndarray, "m d"],
    x_ref: Float[np.ndarray, "n d"],
    k: int = 1,
    *,
    metric: Metric = "cosine",
    exclude_self: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    batch: int = 4096,
) -> tuple[Int[np.ndarray, "m k"], Float[np.ndarray, "m k"]]:
    """Indices into `x_ref` and distances of each query's k nearest references, nearest first.

    With `exclude_self`, queries are the references themselves (x_query is x_ref) and row i
    never returns i (leave-one-out).
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}.")
    ref = torch.as_tensor(np.asarray(x_ref), device=device).to(dtype)
    qry = torch.as_tensor(np.asarray(x_query), device=device).to(dtype)
    if exclude_self and qry.shape != ref.shape:
        raise ValueError("exclude_self needs the queries to be the references.")
    k_eff = k + 1 if exclude_self else k
    if k_eff > len(ref):
        raise ValueError(f"k={k} neighbours asked of {len(ref)} references{' (leave-one-out)' if exclude_self else ''}.")
    if metric == "cosine":
        ref = ref / ref.norm(dim=1, keepdim=True).clamp(min=1e-12)
        qry = qry / qry.norm(dim=1, keepdim=True).clamp(min=1e-12)
    ref_sq = (ref * ref).sum(1)
    idx_out, dist_out = [], []
    for lo in range(0, len(qry), batch):
        q = qry[lo : lo + batch]
        if metric == "cosine":
            d = 1 - q @ ref.T
        else:
            d = ((q * q).sum(1, keepdim=True) - 2 * q @ ref.T + ref_sq[None, :]).clamp(min=0)
        if exclude_self:
            rows = torch.arange(len(q), device=q.device)
            d[rows, rows + lo] = torch.inf
        dist, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
        idx_out.append(idx)
        dist_out.append(dist.sqrt() if metric == "euclidean" else dist)
    if not idx_out:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k))
    return torch.cat(idx_out).cpu().numpy(), torch.cat(dist_out).cpu().numpy()


def _vote(labels_of_neighbours: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Majority label per row; ties go to the smallest label (scikit-learn's uniform-weight vote)."""
    codes = np.searchsorted(classes, labels_of_neighbours)
    m, n_classes = codes.shape[0], len(classes)
    counts = np.zeros((m, n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(m), codes.shape[1]), codes.ravel()), 1)
    return classes[counts.argmax(1)]


def fit_predict(
    x_train: Float[np.ndarray, "n d"], y_train: Int[np.ndarray, " n"], x_test: Float[np.ndarray, "m d"], *, k: int = 1, **options
) -> Int[np.ndarray, " m"]:
    """Majority label of the k nearest training examples; `options` go to `neighbours` (metric, exclude_self, device).

    With `exclude_self=True`, x_test is x_train and no example is its own neighbour (leave-one-out).
    """
    y_train = np.asarray(y_train)
    idx, _ = neighbours(x_test, x_train, k, **options)
    return _vote(y_train[idx], np.unique(y_train))


def leave_one_out(x: Float[np.ndarray, "n d"], y: Int[np.ndarray, " n"], **options) -> Int[np.ndarray, " n"]:
    """Predicted label of every example from its k nearest OTHER examples (re-identification)."""
    return fit_predict(x, y, x, exclude_self=True, **options)
