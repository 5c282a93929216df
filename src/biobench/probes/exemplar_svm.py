"""Exemplar SVMs for re-identification, all queries trained at once in torch.

Malisiewicz, Gupta and Efros. "Ensemble of Exemplar-SVMs for Object Detection and
Beyond." ICCV 2011. biobench's Leopard protocol: for every image i, a linear SVM with i as
the only positive and all other images as negatives (scikit-learn `LinearSVC(C=0.1,
class_weight="balanced")`: squared hinge, L2 penalty, intercept as a regularised constant
feature); the other images are ranked by decision value and the query scores when the
best non-self image shows the same individual. (The seed took `np.argsort(sims)[1]`, the
second *lowest* value; we take the highest non-self value, as the protocol intends.)

All N problems share the data and differ only in which row is positive, so we solve
them together. The objective of query i is

    f_i(w) = 1/2 |w|^2 + sum_j C_j max(0, 1 - y_ij w.x_j)^2,   x_j = [features_j, 1],

whose curvature never exceeds M_i = I + 2 sum_j C_j x_j x_j'. M_i = H + g x_i x_i' with one
shared H = I + 2 C_neg X'X and a rank-one term, so M_i^-1 is applied to all queries with
one inverse of H and the Sherman-Morrison formula. Each iteration is a majorise-minimise
step w <- w - M_i^-1 grad f_i(w) (accelerated with FISTA). We start from the exact solution
for the case where every example is inside its margin (the usual case for exemplar SVMs);
each step then only needs the few examples beyond their margin (a sparse product) and one
(batch x N x d) product for the margins. 100 steps reproduce per-query LinearSVC's top-1
(tests; benchmarks/probes.py).
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int


def fit(
    x: Float[np.ndarray, "n d"] | torch.Tensor,
    *,
    c: float = 0.1,
    n_iter: int = 100,
    tol: float = 1e-6,
    batch: int = 1024,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    queries: Int[np.ndarray, " q"] | None = None,
) -> torch.Tensor:
    """Weights (q, d + 1) of the exemplar SVMs of `queries` (default: all N; last column: intercept).

    Row r is the SVM with example queries[r] as the positive and every other example negative.
    """
    xt = torch.as_tensor(x).to(device=device, dtype=torch.float64)
    n, d = xt.shape
    if n < 2:
        raise ValueError(f"Exemplar SVMs need at least two examples, got {n}.")
    xa = torch.cat([xt, torch.ones(n, 1, dtype=torch.float64, device=xt.device)], dim=1)
    # "balanced" class weights: n / (2 * count) for the one positive and the n - 1 negatives.
    c_pos, c_neg = c * n / 2.0, c * n / (2.0 * (n - 1))
    h = torch.eye(d + 1, dtype=torch.float64, device=xt.device) + 2 * c_neg * xa.T @ xa
    h_inv = torch.linalg.inv(h)
    gamma = 2 * (c_pos - c_neg)
    u = xa @ h_inv  # (n, d+1): H^-1 x_j for every j (H is symmetric)
    denom = 1 + gamma * (xa * u).sum(1)  # Sherman-Morrison denominators per positive
    xa_c, u_c = xa.to(dtype), u.to(dtype)
    h_inv_c = h_inv.to(dtype)
    col_sum = xa.sum(0)

    def apply_m_inv(g: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """M_i^-1 g for every row (query i = q[row]), by Sherman-Morrison on the shared H^-1."""
        a = g @ h_inv_c
        t = gamma * (xa_c[q] * a).sum(1) / denom[q].to(dtype)
        return a - t[:, None] * u_c[q]

    all_q = torch.arange(n, device=xt.device) if queries is None else torch.as_tensor(np.asarray(queries), device=xt.device)
    out = torch.empty(len(all_q), d + 1, dtype=dtype, device=xt.device)
    for lo in range(0, len(all_q), batch):
        q = all_q[lo : lo + batch]
        rows = torch.arange(len(q), device=xt.device)
        cw = torch.full((len(q), n), c_neg, dtype=dtype, device=xt.device)
        cw[rows, q] = c_pos
        y = -torch.ones(len(q), n, dtype=dtype, device=xt.device)
        y[rows, q] = 1.0
        # With every example inside its margin, the objective is the quadratic majoriser
        # itself and its minimiser is w0 = M_i^-1 b_i, b_i = 2 sum_j C_j y_j x_j.
        b = (2 * c_pos + 2 * c_neg) * xa[q] - 2 * c_neg * col_sum[None, :]
        w0 = apply_m_inv(b.to(dtype), q)
        # A majorise-minimise step from v is then w0 - M_i^-1 sum_{j outside} 2 C_j (y_j - m_j) x_j:
        # only the examples beyond their margin (few) enter, as a sparse product.
        w, w_prev, momentum = w0, w0, 1.0
        for _ in range(n_iter):
            # FISTA (Beck & Teboulle 2009) extrapolation in the metric M_i.
            next_momentum = (1 + (1 + 4 * momentum**2) ** 0.5) / 2
            v = w + ((momentum - 1) / next_momentum) * (w - w_prev)
            momentum = next_momentum
            margin = v @ xa_c.T
            outside = y * margin > 1
            corr = torch.where(outside, 2 * cw * (y - margin), torch.zeros((), dtype=dtype, device=xt.device))
            if int(outside.sum()) < 0.1 * outside.numel():
                pull = torch.sparse.mm(corr.to_sparse_csr(), xa_c)
            else:
                pull = corr @ xa_c
            w_prev, w = w, w0 - apply_m_inv(pull, q)
            if float((w - w_prev).norm(dim=1).max()) <= tol * max(float(w.norm(dim=1).max()), 1e-12):
                break
        out[lo : lo + len(q)] = w
    return out


def best_matches(
    x: Float[np.ndarray, "n d"] | torch.Tensor,
    *,
    c: float = 0.1,
    n_iter: int = 100,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    batch: int = 1024,
    queries: Int[np.ndarray, " q"] | None = None,
) -> Int[np.ndarray, " q"]:
    """For every query (default: every example), the index of the OTHER example its exemplar SVM scores highest."""
    w = fit(x, c=c, n_iter=n_iter, device=device, dtype=dtype, batch=batch, queries=queries)
    xt = torch.as_tensor(x).to(device=w.device, dtype=dtype)
    q_all = np.arange(len(xt)) if queries is None else np.asarray(queries)
    out = []
    for lo in range(0, len(w), batch):
        scores = w[lo : lo + batch, :-1] @ xt.T + w[lo : lo + batch, -1:]
        rows = torch.arange(scores.shape[0], device=w.device)
        scores[rows, torch.as_tensor(q_all[lo : lo + batch], device=w.device)] = -torch.inf
        out.append(scores.argmax(1))
    return torch.cat(out).cpu().numpy()


def leave_one_out(x: Float[np.ndarray, "n d"], y: np.ndarray, **kwargs) -> Float[np.ndarray, " n"]:
    """1.0 where an example's best non-self match has its label (individual), else 0.0."""
    y = np.asarray(y)
    return (y[best_matches(x, **kwargs)] == y).astype(np.float64)
