"""Bounds that contain the exact (unregularised) OT cost, from an entropic solution.

- Lower bound: any pair of potentials with f_i + g_j <= C_ij for all i, j gives
  sum a f + sum b g <= OT (weak duality). The c-transform f^c_j = min_i (C_ij - f_i) makes the
  Sinkhorn potential f feasible, and f^cc >= f keeps (f^cc, f^c) feasible with a larger value
  (two transforms give a tighter bound than one, a third nothing new). The same from g gave
  about the same bounds, and lower ones where the solver matched the points to clusters (g is
  then carried over, f iterated): f alone. Figures: benchmarks/README.md, design measurements.
- Upper bound: the cost of any plan with the exact marginals is >= OT. The Sinkhorn plan is
  rounded onto them (Altschuler, Weed & Rigollet 2017): rows scaled down to at most a, columns
  to at most b, and the missing mass added as the rank-one plan err_a err_b^T / |err_a|_1, whose
  cost has a closed form.

Both are exact reductions over all pairs. For a truncated (multiscale) plan, the compiled
kernels (:mod:`otreg.native.kernels`) take both: the c-transform by branch and bound over a tree of
y (O((N + M) log M) in practice), the rounding on the plan's support (O(kept entries): any
plan with the right marginals bounds OT, so the truncated one rounded does too); the cost is
about that of a few iterations of the solve. Otherwise both are dense blocks: O(N M) time,
O(N + M) memory, about four passes of a dense iteration. All in float64. Balanced OT only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .. import native
from ..native import kernels as native_kernels
from .kernels import half_sq_dist_blocks, make_kernel

if TYPE_CHECKING:
    from .solution import TruncatedSupport


def c_transform(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(N,) min_j |x_i - y_j|^2 / 2 - g_j over all j (x (N, D), y (M, D), g (M,), float64)."""
    if native.usable(x, y, g) and x.dtype == torch.float64:
        return native_kernels.c_transform(x, y, g)
    out = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for start, stop, c in half_sq_dist_blocks(x, y):
        out[start:stop] = (c - g[None, :]).amin(1)
    return out


def ot_bounds(
    x, y, a, b, f, g, eps: float, truncated: TruncatedSupport | None = None
) -> tuple[float, float]:
    """[lower, upper] around the exact OT cost sum P_ij |x_i - y_j|^2 / 2 (mm^2).

    Args:
        x: (N, D), y: (M, D) points, mm (same frame); a (N,), b (M,) weights of equal sums.
        f, g: Sinkhorn potentials at ``eps`` (mm^2), for these points in this order.
        truncated: the support of a truncated plan: int32 CSR entries from the points x to
            its ``columns`` (y itself, or clusters of y whose mass goes to their points in
            proportion to their weights); None: all pairs.
    """
    x, y, a, b, f, g = (t.double() for t in (x, y, a, b, f, g))  # bounds are worth the digits
    center = (a @ x + b @ y) / (a.sum() + b.sum())
    x, y = (x - center).contiguous(), (y - center).contiguous()
    f_c = c_transform(y, x, f)
    lower = float(a @ c_transform(x, y, f_c) + b @ f_c)

    if truncated is not None:
        crow, col, columns = truncated.crow, truncated.col, truncated.columns
        y_cols = columns.points.double() - center
        b_cols = columns.log_weights.double().exp()
        upper = native_kernels.rounded_plan_cost(
            crow, col, x, y_cols, a, b_cols, f, columns.g.double(), eps
        )
        if columns.spread is not None:  # the rounded plan gives each cluster its exact mass
            upper += float(b_cols @ columns.spread.double()) / 2
        return lower, upper
    kxy, kyx = make_kernel("torch", x, y, eps), make_kernel("torch", y, x, eps)
    log_a, log_b = a.log(), b.log()
    # P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps); row sums r, then alpha = min(1, a / r)
    rows = a * (f / eps + kxy.lse(log_b + g / eps)).exp()
    alpha = (a / rows).clamp(max=1)
    cols = b * (g / eps + kyx.lse(log_a + alpha.log() + f / eps)).exp()
    beta = (b / cols).clamp(max=1)
    h = log_b + beta.log() + g / eps
    scaled_rows = a * alpha * (f / eps + kxy.lse(h)).exp()  # row sums of diag(alpha) P diag(beta)
    cost = float((scaled_rows * kxy.average(h, y)[:, -1]).sum()) * eps
    err_a = (a - scaled_rows).clamp(min=0)
    err_b = (b - beta * cols).clamp(min=0)
    mass = float(err_a.sum())
    if mass > 0:  # cost of err_a err_b^T / mass, expanded: no N x M matrix
        cost += (
            float(
                (err_a @ (x * x).sum(1)) * err_b.sum() / 2
                + err_a.sum() * (err_b @ (y * y).sum(1)) / 2
                - (err_a @ x) @ (err_b @ y)
            )
            / mass
        )
    return lower, cost
