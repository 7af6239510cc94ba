"""Coarse-to-fine annealing on voxel clusters with truncated kernels (Schmitzer 2019, Feydy).

At each blur s of the annealing, both clouds are replaced by their voxel clusters of side
about s (:mod:`otreg.ot.hierarchy`): finer clusters would not change the blurred plan much,
and coarser ones would. While the clusters are few, the kernels are dense; past
``DENSE_PAIRS`` they are truncated (:mod:`otreg.ot.sparse`): each row keeps only the entries
within ``truncation`` of its largest, and the candidates of a finer level are the children of
the entries kept at the coarser one. Going one level finer, the potentials are carried over to
the children to first order: f(x) = f(X) + grad f(X) . (x - X), with grad f(X) = X - T(X)
(T: the barycentric map of the coarse plan). Memory stays O(N + M + kept entries).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from .hierarchy import BITS, Hierarchy, Level
from .kernels import make_kernel
from .sparse import dense_pattern, expand

log = logging.getLogger(__name__)

# Extra log-range searched at the coarser level when building a finer kernel: the children
# of a cluster pair spread around its centres, so their values differ from the pair's.
_PARENT_SLACK = 4.0
# The kernel of a new level also serves the next blurs of that level (which select from it):
# it spans this much more log-range than the truncation, because the potentials move after
# the entries are chosen. On a 100k cube at blur 1 %, the final marginal error stalled at
# 5.6e-3 with 0 and at 1.4e-3 with 4 (measured).
_SUPERSET_SLACK = 4.0
_COARSE_TOL, _COARSE_ITERATIONS = 1e-2, 100


@dataclass
class Annealed:
    """Potentials and kernels at the final blur, with the points sorted along the curve.

    ``f`` (N,) and ``g`` (M,) belong to ``x[order_x]`` and ``y[order_y]``.
    """

    f: torch.Tensor
    g: torch.Tensor
    kxy: object
    kyx: object
    order_x: torch.Tensor
    order_y: torch.Tensor


def anneal(x, y, problem, blurs: list[float], truncation: float, backend: str) -> Annealed:
    """Symmetric averaged updates at each blur of ``blurs`` (mm, decreasing), coarse to fine.

    Args:
        x: (N, D), y: (M, D) centred points, mm. problem: weights and marginal penalty
            (``otreg.ot.sinkhorn._Problem``, in input order).
        backend: dense backend of the coarse levels ('torch' or 'keops').
    """
    lo = torch.minimum(x[:, :3].min(0).values, y[:, :3].min(0).values)
    side = float((torch.maximum(x[:, :3].max(0).values, y[:, :3].max(0).values) - lo).max()) * 1.001 + 1e-9
    hx = Hierarchy(x, problem.a, lo, side)
    hy = Hierarchy(y, problem.b, lo, side)
    # the final blur is first solved on its own clusters, then on the points: a change of
    # level at a constant blur carries the potentials over most accurately
    blurs = list(blurs) + [blurs[-1]]

    def levels(s: float, last: bool) -> tuple[Level, Level]:
        """Clusters of side in [s, 2 s), or the points themselves when clusters would be
        nearly as many: a truncated row then keeps about (2 truncation)^(3/2) entries."""
        if last:
            return hx.finest, hy.finest
        k = min(BITS, max(0, math.floor(math.log2(side / s))))
        lx, ly = hx.level(k), hy.level(k)
        if len(lx) > 0.3 * len(x) or len(ly) > 0.3 * len(y):
            return hx.finest, hy.finest
        return lx, ly

    lx = ly = kxy = kyx = f = g = None
    for step, s in enumerate(blurs):
        eps = s * s
        nx, ny = levels(s, step == len(blurs) - 1)
        damp = problem.damping(eps)
        if lx is None:
            lx, ly = nx, ny
            f, g = torch.zeros_like(lx.weights), torch.zeros_like(ly.weights)
            kxy, kyx = make_kernel(backend, lx.points, ly.points, s), make_kernel(backend, ly.points, lx.points, s)
        elif nx is not lx:
            f, g, kxy, kyx = _refine(lx, ly, nx, ny, f, g, kxy, kyx, blurs[step - 1], s, damp,
                                     truncation, backend)
            lx, ly = nx, ny
        elif hasattr(kxy, "refilter"):
            kxy = kxy.refilter(ly.weights.log() + g / eps, eps, truncation + _SUPERSET_SLACK)
            kyx = kyx.refilter(lx.weights.log() + f / eps, eps, truncation + _SUPERSET_SLACK)
        else:
            kxy, kyx = make_kernel(backend, lx.points, ly.points, s), make_kernel(backend, ly.points, lx.points, s)
        f_new = -damp * eps * kxy.lse(ly.weights.log() + g / eps)
        g_new = -damp * eps * kyx.lse(lx.weights.log() + f / eps)
        f, g = (f + f_new) / 2, (g + g_new) / 2
        if step == len(blurs) - 2 and nx is not hx.finest:
            # converge the clusters at the final blur before going to the points: the points'
            # kernels are chosen from these potentials, and one annealing update leaves them
            # too far off (the fine iterations then stalled at marginal errors of 1e-2 - 5e-2)
            f, g = _converge(lx, ly, problem.reach, kxy, kyx, s, f, g)
        log.debug("blur %.4g: %d x %d clusters, %s entries", s, len(lx), len(ly),
                  getattr(kxy, "nnz", "all"))
    return Annealed(f, g, kxy, kyx, hx.order, hy.order)


def _converge(lx: Level, ly: Level, reach, kxy, kyx, blur: float, f, g):
    """Iterate on the clusters at ``blur`` to a marginal error of _COARSE_TOL."""
    from .sinkhorn import _iterate, _Problem

    f, g, _, _, _, _ = _iterate(_Problem(lx.weights, ly.weights, reach), kxy, kyx, blur, f, g,
                          _COARSE_TOL, _COARSE_ITERATIONS, 1.8, truncation=None)
    return f, g


def _refine(lx, ly, nx, ny, f, g, kxy, kyx, old_blur, blur, damp, truncation, backend):
    """Potentials and kernels of the finer levels (nx, ny) at ``blur`` from the coarser ones."""
    old_eps, eps = old_blur * old_blur, blur * blur
    f_fine = _prolong(lx, nx, f, kxy, ly.points, ly.weights.log() + g / old_eps, damp)
    g_fine = _prolong(ly, ny, g, kyx, lx.points, lx.weights.log() + f / old_eps, damp)
    if len(nx) * len(ny) <= _dense_pairs():
        return f_fine, g_fine, make_kernel(backend, nx.points, ny.points, blur), make_kernel(
            backend, ny.points, nx.points, blur)
    wide = truncation + _PARENT_SLACK
    kernels = []
    for rows, cols, coarse_rows, coarse_cols, k, g_coarse, g_new in (
        (nx, ny, lx, ly, kxy, g, g_fine), (ny, nx, ly, lx, kyx, f, f_fine)
    ):
        h_coarse = coarse_cols.weights.log() + g_coarse / eps
        if hasattr(k, "pattern"):
            crow, col = k.pattern(h_coarse, eps, wide)
        else:
            crow, col = dense_pattern(coarse_rows.points, coarse_cols.points, h_coarse, eps, wide)
        kernels.append(expand(
            crow, col, coarse_rows.children_start(rows), coarse_cols.children_start(cols),
            rows.points, cols.points, cols.weights.log() + g_new / eps, eps, truncation + _SUPERSET_SLACK,
        ))
    return f_fine, g_fine, kernels[0], kernels[1]


def _prolong(coarse: Level, fine: Level, f: torch.Tensor, kernel, other_points, h, damp):
    """First-order extension of the potential f (on ``coarse``) to ``fine``'s clusters."""
    barycentres = kernel.average(h, other_points)[:, :-1]
    gradient = damp * (coarse.points - barycentres)
    parent = torch.searchsorted(coarse.start, fine.start[:-1], right=True) - 1
    return f[parent] + ((fine.points - coarse.points[parent]) * gradient[parent]).sum(1)


def _dense_pairs() -> int:
    from .sinkhorn import DENSE_PAIRS

    return DENSE_PAIRS
