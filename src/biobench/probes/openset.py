"""Open-set rejection by Mahalanobis distance to the nearest class mean (Lee et al., NeurIPS 2018).

"A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial
Attacks." The detector models every class as a Gaussian with its own mean and one shared
covariance: the pooled within-class covariance, shrunk towards a scaled identity with the
Ledoit-Wolf coefficient after standardising each feature (as scikit-learn's
`LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")`, on pooled rather than
per-class scatter). A test example whose squared distance to its nearest class mean is
above the `quantile` of the training examples' own distances is called unknown; the
others keep the base probe's label. Computed in float64 in row batches, CPU or CUDA.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from jaxtyping import Float, Int


@dataclasses.dataclass(frozen=True)
class Detector:
    """A fitted detector: whitened class means and the rejection threshold."""

    whiten: Float[np.ndarray, "d d"]
    """W with W W^T = inverse covariance, so distances are Euclidean after x -> (x - shift) W."""
    shift: Float[np.ndarray, " d"]
    """Subtracted before whitening (the training mean; keeps the arithmetic well conditioned)."""
    means: Float[np.ndarray, "c d"]
    """Whitened class means."""
    threshold: float
    """Squared distances above this are unknown."""


def shared_covariance(x: Float[np.ndarray, "n d"], codes: Int[np.ndarray, " n"]) -> tuple[np.ndarray, np.ndarray]:
    """(class means, shrunk pooled within-class covariance); the identity when every class has one example."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    k = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    means = np.zeros((k, x.shape[1]))
    np.add.at(means, codes, x)
    means /= counts[:, None]
    z = x - means[codes]  # centred within class, then standardised in place (one n x d copy)
    scale = z.std(axis=0)
    scale[scale == 0] = 1.0
    z /= scale
    emp = z.T @ z / len(z)
    mu = np.trace(emp) / len(emp)
    if mu == 0:  # one example per class: no within-class spread to estimate; Euclidean distances
        return means, np.eye(len(emp))
    shrink = float(ledoit_wolf_shrinkage(z, assume_centered=True))
    cov = (1 - shrink) * emp + shrink * mu * np.eye(len(emp))
    return means, scale[:, None] * cov * scale[None, :]


def fit(x: Float[np.ndarray, "n d"], codes: Int[np.ndarray, " n"], *, quantile: float = 0.95, device="cpu") -> Detector:
    """Fit the detector on training features and their class codes 0..C-1."""
    x = np.asarray(x, dtype=np.float64)
    shift = x.mean(axis=0)
    means, cov = shared_covariance(x - shift, np.asarray(codes))
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, vals.max() * 1e-12)  # a singular direction gets a huge but finite weight
    whiten = vecs / np.sqrt(vals)[None, :]
    det = Detector(whiten, shift, means @ whiten, np.inf)
    train = min_distance(det, x, device=device)
    return dataclasses.replace(det, threshold=float(np.quantile(train, quantile)))


def min_distance(det: Detector, x: Float[np.ndarray, "m d"], *, device="cpu", batch: int = 4096) -> Float[np.ndarray, " m"]:
    """Squared Mahalanobis distance of each row to its nearest class mean."""
    w = torch.as_tensor(det.whiten, device=device)
    mu = torch.as_tensor(det.means, device=device)
    shift = torch.as_tensor(det.shift, device=device)
    mu_sq = (mu * mu).sum(1)
    out = []
    for lo in range(0, len(x), batch):
        q = (torch.as_tensor(np.asarray(x[lo : lo + batch]), dtype=torch.float64, device=device) - shift) @ w
        d2 = (q * q).sum(1, keepdim=True) + mu_sq[None, :] - 2 * q @ mu.T
        out.append(d2.min(1).values.clamp(min=0))
    return torch.cat(out).cpu().numpy() if out else np.zeros(0)
