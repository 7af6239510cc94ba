"""Coarse-to-fine annealing on voxel clusters with truncated kernels (Schmitzer 2019, Feydy).

At each blur s of the annealing, both clouds are replaced by their voxel clusters of side
about s (:mod:`otreg.ot.hierarchy`): finer clusters would not change the blurred plan much,
and coarser ones would. While the clusters are few, the kernels are dense; past
``options.dense_pairs`` they are truncated (:mod:`otreg.ot.sparse`): each row keeps only the entries
within ``truncation`` of its largest, found by a compiled branch and bound on the CPU, by
block bounds in torch on CUDA (:mod:`otreg.ot.device_kernels`; ``options.kernels``); on a CPU
without the compiled kernels they stay dense. Going one level finer, the potentials are carried
over to the children to first order: f(x) = f(X) + grad f(X) . (x - X), with
grad f(X) = X - T(X) (T: the barycentric map of the coarse plan). Where the points are
denser than the final blur (shells and trees), the final blur is solved on clusters too and
the points are matched to them (:func:`to_points`). Memory stays O(N + M + kept entries).

The iterations at the final blur, on clusters then on the points, share ``options.max_iter``;
every loop uses ``options.overrelaxation`` (:func:`otreg.ot.iterate.iterate`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import cast

import torch

from .hierarchy import BITS, Hierarchy, Level, curve_order
from .iterate import Problem, iterate
from .kernels import Kernel, make_kernel
from .options import SolverOptions
from .solution import Columns, Solved
from .sparse import SparseKernel, truncated_pair, truncation_backend

log = logging.getLogger(__name__)

# Marginal errors to which the clusters are iterated: at the final blur before the points take
# over, and at the last blur of a level before a truncated one; and the iterations that a
# level change may take at most (and never more than ``options.max_iter``).
_COARSE_TOL, _LEVEL_TOL, _COARSE_ITERATIONS = 1e-3, 1e-2, 300

# ``options.cluster_final_blur``: solve the final blur s on clusters of side in [s / 2, s) where
# they merge the points at least two to one, then carry the potentials over to the points
# (:func:`to_points`): about the same certified lower bounds, far faster on dense shells and
# trees (benchmarks/README.md, design measurements).

# The annealing takes one averaged update per blur: its kernels keep the entries within e^-6
# of each row's largest (the final blur's, ``truncation``): a little faster, to the same
# certified bounds (benchmarks/README.md, design measurements).
_ANNEALING_TRUNCATION = 6.0


@dataclass
class Annealed:
    """Potentials and kernels at the final eps on the levels ``x_level``, ``y_level``: the
    points sorted along the curve (``x_points``, ``y_points``: ``x[order_x]``, ``y[order_y]``),
    or, where the points are denser than the blur, their clusters (see :func:`to_points`).
    ``updates``: the updates done, ``final_updates`` those at the final eps.
    """

    f: torch.Tensor
    g: torch.Tensor
    kxy: Kernel
    kyx: Kernel
    x_level: Level
    y_level: Level
    x_points: Level
    y_points: Level
    order_x: torch.Tensor
    order_y: torch.Tensor
    updates: int
    final_updates: int

    @property
    def clustered(self) -> bool:
        return self.x_level.spread is not None


def solve(
    x: torch.Tensor,
    y: torch.Tensor,
    problem: Problem,
    epsilons: list[float],
    options: SolverOptions,
) -> Solved:
    """Anneal coarse to fine along ``epsilons`` (mm^2), then iterate at ``epsilons[-1]``.

    Args:
        x: (N, D), y: (M, D) centred points, mm; problem: their weights (input order).
        options: ``backend`` already resolved; ``max_iter`` bounds the final eps's iterations
            on clusters and points together.
    """
    eps = epsilons[-1]
    annealed = anneal(x, y, problem, epsilons, options)
    order_x, order_y = annealed.order_x, annealed.order_y
    x, y, problem = x[order_x], y[order_y], problem.sorted(order_x, order_y)
    clustered = annealed.clustered
    solved = (
        Problem(annealed.x_level.weights, annealed.y_level.weights, problem.reach)
        if clustered
        else problem
    )
    budget = options.max_iter - annealed.final_updates
    f, g, kxy, kyx, done, error = iterate(
        solved, annealed.kxy, annealed.kyx, eps, annealed.f, annealed.g, options, max_iter=budget
    )
    columns = Columns(y, problem.log_b, g, None)
    if clustered:
        f, g, kxy, g_clusters, extra, error = to_points(
            x, problem, annealed, f, g, kxy, kyx, eps, options, budget - done
        )
        columns = Columns(
            annealed.y_level.points, solved.log_b, g_clusters, annealed.y_level.spread
        )
        done += extra
    return _solved(
        x,
        y,
        problem,
        f,
        g,
        kxy,
        columns,
        (annealed.updates + done, annealed.final_updates + done, error),
        (order_x, order_y),
    )


def _cube(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The lowest corner (3,) and the side of a cube holding both clouds' first three
    coordinates: the hierarchies' common frame."""
    lo = torch.minimum(x[:, :3].min(0).values, y[:, :3].min(0).values)
    high = torch.maximum(x[:, :3].max(0).values, y[:, :3].max(0).values)
    return lo, float((high - lo).max()) * 1.001 + 1e-9


def ends_on_points(
    x: torch.Tensor, y: torch.Tensor, problem: Problem, eps: float, options: SolverOptions
) -> bool:
    """Whether :func:`solve` would end its annealing at ``eps`` on the points themselves, not
    on final-blur clusters (``levels`` in :func:`anneal`): only there are the kernels between
    the points of :func:`warm_start` no larger than the annealing's (where the clusters merge
    the points, those between the points can be far larger: a 300,000-point tree's warm
    start at blur 4 mm ran out of 24 GB)."""
    if not options.cluster_final_blur:
        return True
    lo, side = _cube(x, y)
    k = min(BITS, max(0, math.ceil(math.log2(side / math.sqrt(eps)))))
    nx = Hierarchy(x, problem.a, lo, side).count(k)
    ny = Hierarchy(y, problem.b, lo, side).count(k)
    return nx > 0.5 * len(x) or ny > 0.5 * len(y) or nx * ny <= options.dense_pairs


def warm_start(
    x: torch.Tensor,
    y: torch.Tensor,
    problem: Problem,
    eps: float,
    init: tuple[torch.Tensor, torch.Tensor],
    options: SolverOptions,
) -> Solved:
    """Iterate at ``eps`` from the potentials ``init`` of a previous solve between nearly the
    same clouds (e.g. the last rigid iteration), on the truncated kernels that they choose, the
    points sorted along the curve (where truncated kernels can be built: see
    :func:`otreg.ot.sparse.truncation_backend`)."""
    order_x, order_y = curve_order(x), curve_order(y)
    x, y, problem = x[order_x], y[order_y], problem.sorted(order_x, order_y)
    f, g = init[0][order_x], init[1][order_y]
    implementation = truncation_backend(options.kernels, x, y)
    assert implementation is not None, "warm_start needs truncated kernels (sinkhorn checks)"
    pair = truncated_pair(
        x,
        y,
        problem.log_a,
        problem.log_b,
        problem.reach,
        f,
        g,
        eps,
        options.truncation,
        implementation=implementation,
    )
    f, g, kxy, _, done, error = iterate(problem, *pair, eps, f, g, options)
    columns = Columns(y, problem.log_b, g, None)
    return _solved(x, y, problem, f, g, kxy, columns, (done, done, error), (order_x, order_y))


def _solved(x, y, problem, f, g, kxy: Kernel, columns, counts, orders) -> Solved:
    """The :class:`Solved` of the multiscale path: ``counts`` = (iterations, final
    iterations, final error), ``orders`` = (order_x, order_y)."""
    iterations, final_iterations, error = counts
    return Solved(
        x=x,
        y=y,
        problem=problem,
        f=f,
        g=g,
        kxy=kxy,
        columns=columns,
        iterations=iterations,
        final_iterations=final_iterations,
        error=error,
        backend="multiscale",
        order_x=orders[0],
        order_y=orders[1],
        support=(kxy.crow, kxy.col) if isinstance(kxy, SparseKernel) else None,
    )


def anneal(
    x: torch.Tensor,
    y: torch.Tensor,
    problem: Problem,
    epsilons: list[float],
    options: SolverOptions,
) -> Annealed:
    """Symmetric averaged updates at each eps of ``epsilons`` (mm^2, decreasing), coarse to fine.

    Args:
        x: (N, D), y: (M, D) centred points, mm. problem: weights and marginal penalty (in
            input order).
        options: ``backend`` (resolved: 'torch' or 'keops') serves the coarse levels, and all
            levels where the truncated kernels cannot run (not on the CPU, or no compiler).
    """
    truncation, backend = options.truncation, options.backend
    lo, side = _cube(x, y)
    hx = Hierarchy(x, problem.a, lo, side)
    hy = Hierarchy(y, problem.b, lo, side)
    # the final eps is first solved on its own clusters, then on the points: a change of
    # level at a constant eps carries the potentials over most accurately
    epsilons = [*epsilons, epsilons[-1]]

    def levels(eps: float, last: bool) -> tuple[Level, Level]:
        """Clusters of side in [s, 2 s), s = sqrt(eps) the blur (at the final eps's last step:
        in [s / 2, s), see ``options.cluster_final_blur``), or the points themselves when the
        clusters would be more than half as many (on sparse clouds such as vessel trees the
        clusters pay: a registration of copd1 was faster with a threshold of a half than of
        0.3; benchmarks/README.md, design measurements)."""
        if last and not options.cluster_final_blur:
            return hx.finest, hy.finest
        s = math.sqrt(eps)
        k = math.ceil(math.log2(side / s)) if last else math.floor(math.log2(side / s))
        lx, ly = hx.level(min(BITS, max(0, k))), hy.level(min(BITS, max(0, k)))
        # the points take over from clusters only through the truncated kernels (to_points)
        if len(lx) > 0.5 * len(x) or len(ly) > 0.5 * len(y) or (last and not truncated(lx, ly)):
            return hx.finest, hy.finest
        return lx, ly

    implementation = truncation_backend(options.kernels, x, y)

    def truncated(lx: Level, ly: Level) -> bool:
        return len(lx) * len(ly) > options.dense_pairs and implementation is not None

    def kernels(lx: Level, ly: Level, f, g, eps: float, cut: float) -> tuple[Kernel, Kernel]:
        """The pair of kernels x -> y, y -> x of the levels at eps: truncated at ``cut`` for
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
                eps,
                cut,
                implementation=cast(str, implementation),
            )
        return make_kernel(backend, lx.points, ly.points, eps), make_kernel(
            backend, ly.points, lx.points, eps
        )

    def converge(lx: Level, ly: Level, kxy, kyx, eps: float, f, g, tol: float, max_iter: int):
        """Iterate on the clusters at eps to a marginal error of ``tol``."""
        result = iterate(
            Problem(lx.weights, ly.weights, problem.reach),
            kxy,
            kyx,
            eps,
            f,
            g,
            options,
            tol=tol,
            max_iter=max_iter,
        )
        if result.error >= tol:
            log.debug(
                "clusters at blur %.4g stopped after %d iterations at marginal error %.2e",
                math.sqrt(eps),
                result.done,
                result.error,
            )
        return result

    lx, ly = levels(epsilons[0], len(epsilons) == 1)
    f, g = torch.zeros_like(lx.weights), torch.zeros_like(ly.weights)
    # the kernels of the last step: built at step 0, before their first use at a level change
    kxy = kyx = cast(Kernel, None)
    updates = final_updates = 0
    level_iterations = min(_COARSE_ITERATIONS, options.max_iter)

    def final_budget() -> int:
        """Iterations left to the clusters at the final eps (``options.max_iter`` in all)."""
        return max(0, min(level_iterations, options.max_iter - final_updates))

    for step, eps in enumerate(epsilons):
        nx, ny = (lx, ly) if step == 0 else levels(eps, step == len(epsilons) - 1)
        damp = problem.damping(eps)
        if nx is not lx:
            old_eps = epsilons[step - 1]
            if truncated(nx, ny):
                # truncated kernels keep what the potentials say matters: potentials one
                # annealing update from the last blur's can miss mass that must travel far
                # (vessel-like trees then stalled far from convergence)
                at_final = step == len(epsilons) - 1  # the same eps as the last step's
                f, g, kxy, kyx, done, _ = converge(
                    lx,
                    ly,
                    kxy,
                    kyx,
                    old_eps,
                    f,
                    g,
                    _LEVEL_TOL,
                    final_budget() if at_final else level_iterations,
                )
                updates += done
                final_updates += done if at_final else 0
            f, g = (
                _prolong(lx, nx, f, kxy, ly.points, ly.weights.log() + g / old_eps, damp),
                _prolong(ly, ny, g, kyx, lx.points, lx.weights.log() + f / old_eps, damp),
            )
            lx, ly = nx, ny
        final = step >= len(epsilons) - 2  # the final eps, on clusters then on the points
        kxy, kyx = kernels(
            lx, ly, f, g, eps, truncation if final else min(truncation, _ANNEALING_TRUNCATION)
        )
        f_new = -damp * eps * kxy.lse(ly.weights.log() + g / eps)
        g_new = -damp * eps * kyx.lse(lx.weights.log() + f / eps)
        f, g = (f + f_new) / 2, (g + g_new) / 2
        updates += 1
        if step == len(epsilons) - 2 and nx is not hx.finest:
            # converge the clusters at the final eps before going to the points: the points'
            # kernels are chosen from these potentials, and one annealing update leaves them
            # too far off (the fine iterations then stalled well above the usual tol)
            f, g, kxy, kyx, done, _ = converge(
                lx, ly, kxy, kyx, eps, f, g, _COARSE_TOL, final_budget()
            )
            updates += done
            final_updates += done
        log.debug(
            "blur %.4g: %d x %d clusters, %s entries",
            math.sqrt(eps),
            len(lx),
            len(ly),
            getattr(kxy, "nnz", "all"),
        )
    return Annealed(
        f,
        g,
        kxy,
        kyx,
        lx,
        ly,
        hx.finest,
        hy.finest,
        hx.order,
        hy.order,
        updates,
        final_updates,
    )


def to_points(
    x: torch.Tensor,
    problem: Problem,
    annealed: Annealed,
    f: torch.Tensor,
    g: torch.Tensor,
    kxy: Kernel,
    kyx: Kernel,
    eps: float,
    options: SolverOptions,
    max_iter: int,
):
    """Potentials on the points from potentials f, g converged on the final clusters.

    At blur s, clusters of side < s blur the plan little, while between the points
    themselves dense trees and shells keep very many entries per row (memory and time:
    benchmarks/README.md, design measurements). So both potentials are carried over to the
    points to first order, and the points of x are matched to the clusters of y (fewer entries
    per row by the points per cluster), iterated to the marginal error ``options.tol`` in at
    most ``max_iter`` updates.

    Args:
        x: (N, D) the points sorted as the levels; problem: the points' weights.
        f, g: potentials on ``annealed.x_level``, ``annealed.y_level`` at ``eps``; kxy, kyx:
            their kernels.

    Returns:
        f (N,), g (M,) on the points; the kernel from the points x to the clusters of y and
        the clusters' potential (the plan's rows: each cluster's mass then goes to its points
        in proportion to their weights); the iterations done and the final marginal error.
    """
    lx, ly = annealed.x_level, annealed.y_level
    damp = problem.damping(eps)
    f_points = _prolong(lx, annealed.x_points, f, kxy, ly.points, ly.weights.log() + g / eps, damp)
    g_points = _prolong(ly, annealed.y_points, g, kyx, lx.points, lx.weights.log() + f / eps, damp)
    to_clusters = Problem(problem.a, ly.weights, problem.reach)
    # the rows of the points alone choose the entries: the clusters' rows reach many more
    # points each, and their own search took most of the kernels' time on large shells
    kxy, kyx = truncated_pair(
        x,
        ly.points,
        to_clusters.log_a,
        to_clusters.log_b,
        problem.reach,
        f_points,
        g,
        eps,
        options.truncation,
        rows_only=True,
        implementation=cast(str, truncation_backend(options.kernels, x, ly.points)),
    )
    f_points, g, kxy, _, done, error = iterate(
        to_clusters, kxy, kyx, eps, f_points, g, options, max_iter=max_iter
    )
    return f_points, g_points, kxy, g, done, error


def _prolong(coarse: Level, fine: Level, f: torch.Tensor, kernel, other_points, h, damp):
    """First-order extension of the potential f (on ``coarse``) to ``fine``'s clusters."""
    barycentres = kernel.average(h, other_points)[:, :-1]
    gradient = damp * (coarse.points - barycentres)
    parent = torch.searchsorted(coarse.start, fine.start[:-1], right=True) - 1
    return f[parent] + ((fine.points - coarse.points[parent]) * gradient[parent]).sum(1)
