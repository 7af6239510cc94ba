"""Coarse-to-fine annealing on voxel clusters with truncated kernels (Schmitzer 2019, Feydy).

At each blur s of the annealing, both clouds are replaced by their voxel clusters of side
about s (:mod:`otreg.ot.hierarchy`): finer clusters would not change the blurred plan much,
and coarser ones would. While the clusters are few, the kernels are dense; past
``DENSE_PAIRS`` they are truncated (:mod:`otreg.ot.sparse`): each row keeps only the entries
within ``truncation`` of its largest, found by a compiled branch and bound (CPU; elsewhere, or
without a compiler, the kernels stay dense). Going one level finer, the potentials are carried
over to the children to first order: f(x) = f(X) + grad f(X) . (x - X), with
grad f(X) = X - T(X) (T: the barycentric map of the coarse plan). Where the points are
denser than the final blur (shells and trees), the final blur is solved on clusters too and
the points are matched to them (:func:`to_points`). Memory stays O(N + M + kept entries).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from .. import native as _native
from .hierarchy import BITS, Hierarchy, Level
from .kernels import make_kernel
from .sparse import truncated_pair

log = logging.getLogger(__name__)

# Marginal errors to which the clusters are iterated: at the final blur before the points take
# over, and at the last blur of a level before a truncated one.
_COARSE_TOL, _LEVEL_TOL, _COARSE_ITERATIONS = 1e-3, 1e-2, 300

# Solve the final blur s on clusters of side in [s / 2, s) where they merge the points at least
# two to one, then carry the potentials over to the points (:func:`to_points`). Their certified
# lower bounds moved by less than 0.06 % on shells and trees of 25k-100k points at blur 1 %,
# and shells and trees of 100k points took 1.6-2.0 s instead of 8.8-77 s (measured).
CLUSTER_FINAL_BLUR = True

# The annealing takes one averaged update per blur: its kernels keep the entries within e^-6
# of each row's largest (the final blur's, ``truncation``). A 100k-point cube solved 0.2 s
# faster, to the same certified bounds (measured).
_ANNEALING_TRUNCATION = 6.0


@dataclass
class Annealed:
    """Potentials and kernels at the final blur on the levels ``x_level``, ``y_level``: the
    points sorted along the curve (``x_points``, ``y_points``: ``x[order_x]``, ``y[order_y]``),
    or, where the points are denser than the blur, their clusters (see :func:`to_points`).
    """

    f: torch.Tensor
    g: torch.Tensor
    kxy: object
    kyx: object
    x_level: Level
    y_level: Level
    x_points: Level
    y_points: Level
    order_x: torch.Tensor
    order_y: torch.Tensor

    @property
    def clustered(self) -> bool:
        return self.x_level.spread is not None


def anneal(x, y, problem, blurs: list[float], truncation: float, backend: str) -> Annealed:
    """Symmetric averaged updates at each blur of ``blurs`` (mm, decreasing), coarse to fine.

    Args:
        x: (N, D), y: (M, D) centred points, mm. problem: weights and marginal penalty
            (``otreg.ot.sinkhorn._Problem``, in input order).
        backend: dense backend ('torch' or 'keops') of the coarse levels, and of all levels
            where the truncated kernels cannot run (not on the CPU, or no compiler).
    """
    lo = torch.minimum(x[:, :3].min(0).values, y[:, :3].min(0).values)
    side = (
        float((torch.maximum(x[:, :3].max(0).values, y[:, :3].max(0).values) - lo).max()) * 1.001
        + 1e-9
    )
    hx = Hierarchy(x, problem.a, lo, side)
    hy = Hierarchy(y, problem.b, lo, side)
    # the final blur is first solved on its own clusters, then on the points: a change of
    # level at a constant blur carries the potentials over most accurately
    blurs = list(blurs) + [blurs[-1]]

    def levels(s: float, last: bool) -> tuple[Level, Level]:
        """Clusters of side in [s, 2 s) (at the final blur's last step: in [s / 2, s), see
        ``CLUSTER_FINAL_BLUR``), or the points themselves when the clusters would be more than
        half as many (on sparse clouds such as vessel trees the clusters pay: copd1's 20,000
        points keep 290 entries per row at blur 6.5 mm; its registration took 2 s less with a
        threshold of a half than of 0.3)."""
        if last and not CLUSTER_FINAL_BLUR:
            return hx.finest, hy.finest
        k = math.ceil(math.log2(side / s)) if last else math.floor(math.log2(side / s))
        lx, ly = hx.level(min(BITS, max(0, k))), hy.level(min(BITS, max(0, k)))
        # the points take over from clusters only through the truncated kernels (to_points)
        if len(lx) > 0.5 * len(x) or len(ly) > 0.5 * len(y) or (last and not truncated(lx, ly)):
            return hx.finest, hy.finest
        return lx, ly

    def truncated(lx: Level, ly: Level) -> bool:
        return len(lx) * len(ly) > _dense_pairs() and _native.usable(lx.points, ly.points)

    def kernels(lx: Level, ly: Level, f, g, s: float, cut: float):
        """The pair of kernels x -> y, y -> x of the levels at blur s: truncated at ``cut`` for
        the potentials f, g when large and possible, else dense."""
        if truncated(lx, ly):
            return truncated_pair(
                lx.points,
                ly.points,
                lx.weights.log(),
                ly.weights.log(),
                problem.reach,
                f,
                g,
                s * s,
                cut,
            )
        return make_kernel(backend, lx.points, ly.points, s), make_kernel(
            backend, ly.points, lx.points, s
        )

    lx = ly = kxy = kyx = f = g = None
    for step, s in enumerate(blurs):
        eps = s * s
        nx, ny = levels(s, step == len(blurs) - 1)
        damp = problem.damping(eps)
        if lx is None:
            lx, ly = nx, ny
            f, g = torch.zeros_like(lx.weights), torch.zeros_like(ly.weights)
        elif nx is not lx:
            if truncated(nx, ny):
                # truncated kernels keep what the potentials say matters: potentials one
                # annealing update from the last blur's can miss mass that must travel far
                # (vessel-like trees then stalled at marginal errors near 1, measured)
                f, g, kxy, kyx = _converge(
                    lx, ly, problem.reach, kxy, kyx, blurs[step - 1], f, g, truncation, _LEVEL_TOL
                )
            old_eps = blurs[step - 1] ** 2
            f, g = (
                _prolong(lx, nx, f, kxy, ly.points, ly.weights.log() + g / old_eps, damp),
                _prolong(ly, ny, g, kyx, lx.points, lx.weights.log() + f / old_eps, damp),
            )
            lx, ly = nx, ny
        final = step >= len(blurs) - 2  # the final blur, on clusters then on the points
        kxy, kyx = kernels(
            lx, ly, f, g, s, truncation if final else min(truncation, _ANNEALING_TRUNCATION)
        )
        f_new = -damp * eps * kxy.lse(ly.weights.log() + g / eps)
        g_new = -damp * eps * kyx.lse(lx.weights.log() + f / eps)
        f, g = (f + f_new) / 2, (g + g_new) / 2
        if step == len(blurs) - 2 and nx is not hx.finest:
            # converge the clusters at the final blur before going to the points: the points'
            # kernels are chosen from these potentials, and one annealing update leaves them
            # too far off (the fine iterations then stalled at marginal errors of 1e-2 - 5e-2)
            f, g, kxy, kyx = _converge(
                lx, ly, problem.reach, kxy, kyx, s, f, g, truncation, _COARSE_TOL
            )
        log.debug(
            "blur %.4g: %d x %d clusters, %s entries",
            s,
            len(lx),
            len(ly),
            getattr(kxy, "nnz", "all"),
        )
    return Annealed(f, g, kxy, kyx, lx, ly, hx.finest, hy.finest, hx.order, hy.order)


def to_points(
    x, problem, annealed: Annealed, f, g, kxy, kyx, eps: float, truncation: float, tol: float
):
    """Potentials on the points from potentials f, g converged on the final clusters.

    At blur s, clusters of side < s blur the plan little, while between the points
    themselves a vessel-like tree of 100,000 points kept 1,300 entries per row (11 GB, 77 s,
    measured). So both potentials are carried over to the points to first order, and the
    points of x are matched to the clusters of y (fewer entries per row by the points per
    cluster), iterated to the marginal error ``tol``.

    Args:
        x: (N, D) the points sorted as the levels; problem: the points' weights.
        f, g: potentials on ``annealed.x_level``, ``annealed.y_level`` at ``eps``; kxy, kyx:
            their kernels.

    Returns:
        f (N,), g (M,) on the points; the kernel from the points x to the clusters of y and
        the clusters' potential (the plan's rows: each cluster's mass then goes to its points
        in proportion to their weights); the iterations done and the final marginal error.
    """
    from .sinkhorn import _iterate, _Problem

    lx, ly = annealed.x_level, annealed.y_level
    damp = problem.damping(eps)
    f_points = _prolong(lx, annealed.x_points, f, kxy, ly.points, ly.weights.log() + g / eps, damp)
    g_points = _prolong(ly, annealed.y_points, g, kyx, lx.points, lx.weights.log() + f / eps, damp)
    to_clusters = _Problem(problem.a, ly.weights, problem.reach)
    # the rows of the points alone choose the entries: the clusters' rows reach many more
    # points each, and their own search was 60 % of the kernels' time on a 100k shell (measured)
    kxy, kyx = truncated_pair(
        x,
        ly.points,
        to_clusters.log_a,
        to_clusters.log_b,
        problem.reach,
        f_points,
        g,
        eps,
        truncation,
        rows_only=True,
    )
    f_points, g, kxy, _, done, error = _iterate(
        to_clusters, kxy, kyx, math.sqrt(eps), f_points, g, tol, _COARSE_ITERATIONS, 1.8, truncation
    )
    return f_points, g_points, kxy, g, done, error


def _converge(
    lx: Level, ly: Level, reach, kxy, kyx, blur: float, f, g, truncation: float, tol: float
):
    """Iterate on the clusters at ``blur`` to a marginal error of ``tol``; returns
    (f, g, kxy, kyx), the kernels as last (re)selected."""
    from .sinkhorn import _iterate, _Problem

    f, g, kxy, kyx, _, _ = _iterate(
        _Problem(lx.weights, ly.weights, reach),
        kxy,
        kyx,
        blur,
        f,
        g,
        tol,
        _COARSE_ITERATIONS,
        1.8,
        truncation,
    )
    return f, g, kxy, kyx


def _prolong(coarse: Level, fine: Level, f: torch.Tensor, kernel, other_points, h, damp):
    """First-order extension of the potential f (on ``coarse``) to ``fine``'s clusters."""
    barycentres = kernel.average(h, other_points)[:, :-1]
    gradient = damp * (coarse.points - barycentres)
    parent = torch.searchsorted(coarse.start, fine.start[:-1], right=True) - 1
    return f[parent] + ((fine.points - coarse.points[parent]) * gradient[parent]).sum(1)


def _dense_pairs() -> int:
    from .sinkhorn import DENSE_PAIRS

    return DENSE_PAIRS
