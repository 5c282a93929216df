"""SimpleShot: centre on the training mean, L2-normalise, nearest class centroid.

Wang, Chao, Weinberger and van der Maaten. "SimpleShot: Revisiting Nearest-Neighbor
Classification for Few-Shot Learning." arXiv:1911.04623 (2019). The protocol of
biobench's Birds525, KABR and Rare Species tasks; identical predictions to the seed's
`sklearn.neighbors.NearestCentroid` on the normalised features (tested), computed in torch
in row batches (CPU or CUDA).
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int


def _l2(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


def fit_predict(
    x_train: Float[np.ndarray, "n d"],
    y_train: Int[np.ndarray, " n"],
    x_test: Float[np.ndarray, "m d"],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    batch: int = 8192,
) -> Int[np.ndarray, " m"]:
    """Predicted labels of `x_test` (nearest centroid in Euclidean distance after centring and L2 normalisation)."""
    y_train = np.asarray(y_train)
    if len(y_train) != len(x_train):
        raise ValueError(f"x_train has {len(x_train)} rows but y_train has {len(y_train)} labels.")
    classes, codes = np.unique(y_train, return_inverse=True)
    xtr = torch.as_tensor(np.asarray(x_train), device=device).to(dtype)
    mean = xtr.mean(0, keepdim=True)
    xtr = _l2(xtr - mean)
    codes_t = torch.as_tensor(codes, device=xtr.device)
    centroids = torch.zeros(len(classes), xtr.shape[1], dtype=dtype, device=xtr.device).index_add_(0, codes_t, xtr)
    centroids /= torch.bincount(codes_t, minlength=len(classes)).to(dtype)[:, None]
    c_sq = (centroids * centroids).sum(1)
    xte = torch.as_tensor(np.asarray(x_test), device=device).to(dtype)
    out = []
    for lo in range(0, len(xte), batch):
        q = _l2(xte[lo : lo + batch] - mean)
        # ||q - c||^2 = ||q||^2 - 2 q.c + ||c||^2; ||q||^2 is constant per row.
        out.append((c_sq[None, :] - 2 * q @ centroids.T).argmin(1))
    pred = torch.cat(out).cpu().numpy() if out else np.zeros(0, dtype=np.int64)
    return classes[pred]
