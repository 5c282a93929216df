"""libsvm's C-SVC solver (SMO) for many small binary problems at once, in torch (CPU or CUDA).

Each problem b is libsvm's dual

    min_a  1/2 a' Q a - 1' a   s.t.  y' a = 0,  0 <= a <= C_b,   Q_ij = y_i y_j K_ij,

and every step is libsvm's (`Solver::Solve` in svm.cpp, as scikit-learn ships it):
second-order working-set selection (WSS 3 of Fan, Chen and Lin 2005, ties to the LAST
index as libsvm's `>=` / `<=` scans give), the same two-variable update and clipping, the
same stopping rule (max violation `Gmax + Gmax2 < eps`, eps = 1e-3 for SVC), kernel rows
rounded to float32 as libsvm's kernel cache stores them (`Qfloat`), the diagonal in
float64, `TAU` for non-positive curvature (sigmoid kernels are indefinite) and libsvm's
`calculate_rho` for the intercept. What it leaves out is shrinking, which changes which
variables a late step may pick and so the last digits of the solution, not its optimality
(the stopping rule is the same); callers treat decisions near zero as uncertain
(`biobench.probes.svm`).

Problems of different sizes share one batch by padding: a padded variable has y = 0, so
it is never selected, never moves and adds nothing to a decision.
"""

from __future__ import annotations

import torch

TAU = 1e-12
EPS = 1e-3


BIG = 1e300  # a finite "minus infinity" for masked entries (0 * inf would be NaN)


def solve(
    k: torch.Tensor, qd: torch.Tensor, y: torch.Tensor, c: torch.Tensor, *, eps: float = EPS, max_iter: int = 100_000
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Solve B problems. Returns (alpha (B, n), rho (B,), iterations (B,), the largest alpha any step reached (B,)).

    k: (B, n, n) float64 kernel matrices whose entries are float32 values (libsvm's cache
    holds them so); qd: (B, n) their diagonals at full precision; y: (B, n) labels +1 / -1,
    0 for padding; c: (B,) each problem's C. Variables are listed in REVERSE libsvm order:
    ties go to the first index here and to the last in libsvm. The path never depends on C
    while no alpha reaches it, so a problem with the same kernel and a C above the returned
    maximum has exactly the same solution.

    Each step costs a handful of (B, n) operations: the working-set masks are kept as
    penalties (0 or -BIG) updated only where alpha moved, and a problem that has stopped
    keeps its state (its steps are zeroed) until the batch is compacted.
    """
    b, n = y.shape
    dev = y.device
    rows_of_k = k.reshape(b * n, n)  # row i of problem p is row p * n + i
    y = y.to(torch.float64)
    cvar = torch.where(y != 0, c.to(torch.float64).reshape(b, 1), 0.0)  # padding: 0 <= alpha <= 0
    # libsvm's curvature of every pair, QD_i + QD_j - 2 K_ij (TAU where not positive), row by row as needed
    quad_all = (qd[:, :, None] + qd[:, None, :]) - 2.0 * k
    quad_all = torch.where(quad_all > 0, quad_all, TAU).reshape(b * n, n)
    alpha = torch.zeros(b, n, dtype=torch.float64, device=dev)
    yg = -y.clone()  # y * G, with G = Q alpha - 1 = -1 at alpha = 0
    iters = torch.full((b,), -1, dtype=torch.int64, device=dev)
    peak = torch.zeros(b, dtype=torch.float64, device=dev)
    # I_up: y = +1 below C or y = -1 above 0; I_low the other way round. At alpha = 0: I_up = {y = +1}.
    zero, low_pen = torch.zeros((), dtype=torch.float64, device=dev), torch.full((), -BIG, dtype=torch.float64, device=dev)
    pen_up = torch.where(y > 0, zero, low_pen)
    pen_low = torch.where(y < 0, zero, low_pen)
    active = torch.arange(b, device=dev)
    a_qd, a_y, a_c, a_alpha, a_yg, a_peak, a_it = qd, y, cvar, alpha.clone(), yg.clone(), peak.clone(), iters.clone()
    it = 0
    buf = None
    while it < max_iter:
        if buf is None or len(buf[0]) != len(active):
            buf = [torch.empty((len(active), n), dtype=torch.float64, device=dev) for _ in range(4)]
        v, t, k_i, quad = buf
        gmax, i = torch.sub(pen_up, a_yg, out=v).max(1)
        i1 = i[:, None]
        torch.index_select(rows_of_k, 0, active * n + i, out=k_i)
        torch.index_select(quad_all, 0, active * n + i, out=quad)
        # t = G_j + Gmax over I_low (libsvm's grad_diff), -BIG elsewhere; its max is Gmax + Gmax2
        torch.add(a_yg, pen_low, out=t).add_(gmax[:, None])
        gap = t.amax(1)
        # libsvm minimises -(grad_diff^2) / quad over grad_diff > 0: maximise the square where positive, 0 elsewhere
        best, j = t.clamp_(min=0).square_().div_(quad).max(1)
        stop = (gap < eps) | ~(best > 0)
        a_it = torch.where(stop & (a_it < 0), it, a_it)
        n_stop = int(stop.sum())
        if n_stop == len(active):
            break
        if n_stop > len(active) // 4:
            done = active[a_it >= 0]
            alpha[done], yg[done], iters[done], peak[done] = a_alpha[stop], a_yg[stop], a_it[stop], a_peak[stop]
            keep = ~stop
            active = active[keep]
            a_qd, a_y, a_c, a_alpha, a_yg, a_peak, a_it = (x[keep] for x in (a_qd, a_y, a_c, a_alpha, a_yg, a_peak, a_it))
            pen_up, pen_low, i, j, i1, k_i = (x[keep] for x in (pen_up, pen_low, i, j, i1, k_i))
            stop = stop[keep]
            buf = None
        j1 = j[:, None]
        k_j = quad if buf is not None else torch.empty_like(k_i)  # the curvature row is no longer needed
        torch.index_select(rows_of_k, 0, active * n + j, out=k_j)
        y_i, y_j = a_y.gather(1, i1)[:, 0], a_y.gather(1, j1)[:, 0]
        g_i, g_j = y_i * a_yg.gather(1, i1)[:, 0], y_j * a_yg.gather(1, j1)[:, 0]
        old_i, old_j = a_alpha.gather(1, i1)[:, 0], a_alpha.gather(1, j1)[:, 0]
        c_ = a_c.gather(1, i1)[:, 0]
        q = quad_all[active * n + i, j]
        same = y_i == y_j
        # libsvm's clipping, as clamps onto the feasible segment (its branches give the same values).
        # y_i != y_j: both move by delta, keeping alpha_i - alpha_j = dif.
        delta = (-g_i - g_j) / q
        dif = old_i - old_j
        pos_dif, neg_dif = dif.clamp(min=0), dif.clamp(max=0)
        ai = torch.clamp(old_i + delta, pos_dif, c_ + neg_dif)
        aj = torch.clamp(old_j + delta, -neg_dif, c_ - pos_dif)
        # y_i == y_j: they trade, keeping alpha_i + alpha_j = tot.
        delta_s = (g_i - g_j) / q
        tot = old_i + old_j
        lo, hi = (tot - c_).clamp(min=0), torch.minimum(tot, c_)
        ai = torch.where(same, torch.clamp(old_i - delta_s, lo, hi), ai)
        aj = torch.where(same, torch.clamp(old_j + delta_s, lo, hi), aj)
        ai, aj = torch.where(stop, old_i, ai), torch.where(stop, old_j, aj)
        a_alpha.scatter_(1, i1, ai[:, None]).scatter_(1, j1, aj[:, None])
        a_peak = torch.maximum(a_peak, torch.maximum(ai, aj))
        for idx, a_new, y_new in ((i1, ai, y_i), (j1, aj, y_j)):
            below, above, up_side = a_new < c_, a_new > 0, y_new > 0
            in_up = (up_side & below) | (~up_side & above)
            in_low = (up_side & above) | (~up_side & below)
            pen_up.scatter_(1, idx, ((in_up.to(torch.float64) - 1.0) * BIG)[:, None])
            pen_low.scatter_(1, idx, ((in_low.to(torch.float64) - 1.0) * BIG)[:, None])
        # G_k += y_k (y_i K_ik d_i + y_j K_jk d_j), so y_k G_k moves by the bracket.
        a_yg.addcmul_(k_i, ((ai - old_i) * y_i)[:, None]).addcmul_(k_j, ((aj - old_j) * y_j)[:, None])
        it += 1
    a_it = torch.where(a_it < 0, it, a_it)
    alpha[active], yg[active], iters[active], peak[active] = a_alpha, a_yg, a_it, a_peak
    return alpha, _rho(alpha, yg, y, cvar), iters, peak


def _rho(alpha: torch.Tensor, yg: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """libsvm's `calculate_rho`: the mean of y G over free variables, else the middle of the bounds."""
    upper, lower = alpha >= c, alpha <= 0
    pos, neg = y > 0, y < 0
    free = (pos | neg) & ~upper & ~lower
    to_ub = (upper & neg) | (lower & pos)  # ub = min(ub, yG)
    to_lb = (upper & pos) | (lower & neg)  # lb = max(lb, yG)
    ub = torch.where(to_ub, yg, torch.inf).amin(1)
    lb = torch.where(to_lb, yg, -torch.inf).amax(1)
    n_free = free.sum(1)
    mean_free = torch.where(free, yg, 0.0).sum(1) / n_free.clamp(min=1)
    return torch.where(n_free > 0, mean_free, (ub + lb) / 2)
