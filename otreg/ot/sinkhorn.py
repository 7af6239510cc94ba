"""Log-domain Sinkhorn with epsilon-scaling, balanced or unbalanced, on torch or pykeops.

Cost C(x, y) = |x - y|^2 / 2 (mm^2), entropic regularisation eps = blur^2 (blur in mm: the
standard deviation of the Gaussian kernel exp(-C / eps)); unbalanced marginals penalised by
rho * KL with rho = reach^2. The schedule follows Feydy's GeomLoss (symmetric, averaged updates
while blur decreases geometrically from the clouds' diameter), then, unlike GeomLoss, iterates
at the final blur until the plan's marginal error is below ``tol``: stopping early biases the
cost by 5-30 % (see ``shared/notes``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .. import native as _native
from ..errors import SolverError
from .hierarchy import curve_order
from .kernels import choose_backend, make_kernel
from .sparse import SparseKernel, refilter, truncated_pair

log = logging.getLogger(__name__)


@dataclass
class OTSolution:
    """The result of one OT solve between a source x (N, 3) and a target y (M, 3), mm.

    Attributes:
        f, g: dual potentials (N,), (M,), mm^2, at the final ``eps``.
        targets: (N, 3) barycentric projection sum_j P_ij y_j / sum_j P_ij, mm, in the frame
            of the inputs: where each source point is matched.
        confidence: (N,) transported mass / own mass (1 for balanced OT at convergence; smaller
            where unbalanced OT leaves a point unmatched).
        cost: primal transport cost sum_ij P_ij |x_i - y_j|^2 / 2, mm^2 (weights as given).
        dual: entropic OT value from the potentials, mm^2.
        blur, reach: mm; eps = blur^2.
        iterations: Sinkhorn updates done (annealing + final).
        marginal_error: L1 error of the plan's source marginal relative to the source mass.
        backend: 'torch', 'keops' (dense) or 'multiscale'.
    """

    f: torch.Tensor
    g: torch.Tensor
    targets: torch.Tensor
    confidence: torch.Tensor
    cost: float
    dual: float
    blur: float
    reach: float | None
    iterations: int
    marginal_error: float
    backend: str

    @property
    def eps(self) -> float:
        return self.blur**2

    def bounds(self) -> tuple[float, float]:
        """[lower, upper] (mm^2) that contain the exact OT cost between the two clouds
        (balanced OT only; see :mod:`otreg.ot.certificate`). Costs O(N M), about four dense
        iterations: computed on request, not by every solve."""
        if self.reach is not None:
            raise SolverError("OT bounds are defined for balanced OT only (reach = None)")
        from .certificate import ot_bounds

        return ot_bounds(*self._inputs, self.blur, self._plan)

    def unsort(self, order_x: torch.Tensor, order_y: torch.Tensor) -> None:
        """Put per-point arrays back in input order (the multiscale solver sorts the points)."""
        for name, order in (
            ("f", order_x),
            ("targets", order_x),
            ("confidence", order_x),
            ("g", order_y),
        ):
            value = getattr(self, name)
            restored = torch.empty_like(value)
            restored[order] = value
            setattr(self, name, restored)

    @property
    def transported_mass(self) -> float:
        """Fraction of the source mass that the plan moves (1 for balanced OT)."""
        return float(self.confidence.mean()) if self.confidence.numel() else 0.0


# Above this many point pairs, the multiscale solver replaces the dense one: with the compiled
# kernels, 1,000-2,000-point clouds at blur 1 % solved in 0.06-0.09 s instead of 1.3-8 s
# (dense, one thread, measured); far smaller problems are not worth the set-up.
DENSE_PAIRS = 250_000


_DRIFT_EVERY = 5  # iterations between checks of the truncated kernels' drift
_OVERRELAX_BELOW = 0.1  # marginal error under which the updates are over-relaxed


def blur_schedule(diameter: float, blur: float, scaling: float) -> list[float]:
    """Geometric blur sequence from ``diameter`` down to ``blur`` (mm), ratio ``scaling``."""
    if diameter <= blur:
        return [blur]
    steps = math.ceil(math.log(blur / diameter) / math.log(scaling))
    return [diameter * scaling**k for k in range(steps)] + [blur]


def sinkhorn(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    blur: float,
    reach: float | None = None,
    scaling: float = 0.5,
    tol: float = 1e-3,
    max_iter: int = 200,
    overrelaxation: float = 1.8,
    backend: str = "auto",
    multiscale: bool = True,
    truncation: float = 10.0,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> OTSolution:
    """Solve entropic OT between two weighted clouds.

    Args:
        x: (N, D) source points, mm (D = 3, or 3 + scaled features; any frame: the solver
            centres them internally so float32 keeps its precision far from the origin).
        y: (M, D) target points, mm, same frame, dtype and device as ``x``.
        a: (N,) source weights >= 0 (default uniform 1/N). Balanced OT needs sum a = sum b.
        b: (M,) target weights >= 0 (default uniform 1/M).
        blur: final blur, mm (eps = blur^2).
        reach: unbalanced OT length, mm (rho = reach^2); None for balanced OT.
        scaling: ratio between successive blurs of the annealing (0 < scaling < 1).
        tol: stop iterating at the final blur when the source-marginal L1 error (relative) is
            below ``tol``.
        max_iter: at most this many iterations at the final blur.
        overrelaxation: omega in [1, 2) of the over-relaxed updates at the final blur
            (Thibault et al. 2017): f <- (1 - omega) f + omega softmin(g). 1.8 measured about 5x
            fewer iterations than 1 on lung-like clouds; falls back to 1 if the error grows.
        backend: 'auto', 'torch' (dense blocks) or 'keops', for the dense (coarse or small)
            problems.
        multiscale: solve large problems (N * M above ``DENSE_PAIRS``) coarse to fine on
            voxel clusters with truncated kernels (:mod:`otreg.ot.multiscale`; where the points
            are denser than the blur, the final blur too, and the points are then matched to
            the clusters); False solves every scale densely, O(N M) per iteration.
        truncation: the multiscale kernels keep, per row, the entries within exp(-truncation)
            of the row's largest one (6 to 16 moved the cost by < 0.1 % on 10k-point cubes,
            shells and trees, measured).
        init: potentials (f, g) of a previous solve between nearly the same clouds (e.g. the
            last rigid iteration): the annealing is skipped and the iterations start from them.

    Returns:
        An :class:`OTSolution`; ``targets`` are in the frame of ``x`` and ``y``.
    """
    if blur <= 0:
        raise SolverError(f"blur must be > 0 mm, got {blur}")
    dtype, device = x.dtype, x.device
    a = torch.full((len(x),), 1 / len(x), dtype=dtype, device=device) if a is None else a
    b = torch.full((len(y),), 1 / len(y), dtype=dtype, device=device) if b is None else b
    if reach is None and not math.isclose(float(a.sum()), float(b.sum()), rel_tol=1e-4):
        raise SolverError(
            f"balanced OT needs equal masses, got {float(a.sum()):.6g} and {float(b.sum()):.6g}"
        )
    backend = choose_backend(backend, device)

    # Centre on the joint centre of mass: costs are translation invariant, and |x|^2 terms of
    # the dense kernel lose float32 precision when the clouds sit 300 mm from the origin.
    center = (a @ x + b @ y) / (a.sum() + b.sum())
    x, y = x - center, y - center
    lo = torch.minimum(x.min(0).values, y.min(0).values)
    hi = torch.maximum(x.max(0).values, y.max(0).values)
    blurs = blur_schedule(float((hi - lo).norm()), blur, scaling)
    problem = _Problem(a, b, reach)

    if multiscale and init is not None and len(x) * len(y) > DENSE_PAIRS and _native.usable(x, y):
        # warm start (e.g. the rigid iterations): the truncated kernels of the given
        # potentials, on the points sorted along the curve
        order_x, order_y = curve_order(x), curve_order(y)
        x, y, problem = x[order_x], y[order_y], _Problem(a[order_x], b[order_y], reach)
        f, g = init[0][order_x], init[1][order_y]
        kxy, kyx = truncated_pair(
            x, y, problem.log_a, problem.log_b, reach, f, g, blur**2, truncation
        )
        iterations, annealed = 0, None
    elif multiscale and init is None and len(x) * len(y) > DENSE_PAIRS:
        from .multiscale import anneal, to_points

        annealed = anneal(x, y, problem, blurs, truncation, backend)
        order_x, order_y = annealed.order_x, annealed.order_y
        x, y, problem = x[order_x], y[order_y], _Problem(a[order_x], b[order_y], reach)
        f, g, kxy, kyx = annealed.f, annealed.g, annealed.kxy, annealed.kyx
        iterations = len(blurs)
    else:
        order_x = order_y = annealed = None
        kxy, kyx = make_kernel(backend, x, y, blur), make_kernel(backend, y, x, blur)
        if init is not None:
            f, g = init
            iterations = 0
        else:  # annealing: symmetric averaged updates while the blur decreases
            f, g = problem.symmetric_start(
                make_kernel(backend, x, y, blurs[0]), make_kernel(backend, y, x, blurs[0]), blurs[0]
            )
            for s in blurs:
                f, g = problem.symmetric_update(
                    make_kernel(backend, x, y, s), make_kernel(backend, y, x, s), s, f, g
                )
            iterations = len(blurs) + 1

    clustered = annealed is not None and annealed.clustered
    solved = (
        _Problem(annealed.x_level.weights, annealed.y_level.weights, reach)
        if clustered
        else problem
    )
    f, g, kxy, kyx, more, error = _iterate(
        solved, kxy, kyx, blur, f, g, tol, max_iter, overrelaxation, truncation
    )
    columns = _Columns(y, problem.log_b, g, None)
    if clustered:
        f, g, kxy, g_clusters, extra, error = to_points(
            x, problem, annealed, f, g, kxy, kyx, blur**2, truncation, tol
        )
        columns = _Columns(
            annealed.y_level.points, solved.log_b, g_clusters, annealed.y_level.spread
        )
        more += extra
    solution = _solution(
        problem,
        kxy,
        x,
        columns,
        f,
        g,
        blur,
        iterations + more,
        error,
        "multiscale" if order_x is not None else backend,
    )
    solution.targets += center
    # what the certificate needs: the points, weights and potentials in the solver's order,
    # and the support and columns of a truncated plan
    solution._inputs = (x, y, problem.a, problem.b, f, g)
    solution._plan = (kxy.crow, kxy.col, columns) if isinstance(kxy, SparseKernel) else None
    if order_x is not None:
        solution.unsort(order_x, order_y)
    return solution


class _Columns(NamedTuple):
    """The columns of a plan: the target points, or their clusters (then each cluster's mass
    goes to its points in proportion to their weights, at the extra cost of half its spread).

    points (m, D), log_weights (m,), potential g (m,), spread (m,) mm^2 or None for points.
    """

    points: torch.Tensor
    log_weights: torch.Tensor
    g: torch.Tensor
    spread: torch.Tensor | None


class _Problem:
    """Weights and marginal penalty of one solve: the updates every backend shares."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, reach: float | None):
        self.a, self.b, self.reach = a, b, reach
        self.log_a, self.log_b = a.log(), b.log()  # -inf for zero weights: no mass there

    def damping(self, eps: float) -> float:
        return 1.0 if self.reach is None else 1.0 / (1.0 + eps / self.reach**2)

    def f_from_g(self, kxy, g: torch.Tensor, eps: float) -> torch.Tensor:
        """Softmin update f_i = -eps log sum_j b_j exp((g_j - C_ij) / eps), damped if unbalanced."""
        return -self.damping(eps) * eps * kxy.lse(self.log_b + g / eps)

    def g_from_f(self, kyx, f: torch.Tensor, eps: float) -> torch.Tensor:
        return -self.damping(eps) * eps * kyx.lse(self.log_a + f / eps)

    def symmetric_start(self, kxy, kyx, blur: float):
        eps = blur * blur
        return (
            self.f_from_g(kxy, torch.zeros_like(self.b), eps),
            self.g_from_f(kyx, torch.zeros_like(self.a), eps),
        )

    def symmetric_update(self, kxy, kyx, blur: float, f, g):
        """GeomLoss's averaged update at one blur of the annealing."""
        eps = blur * blur
        return (f + self.f_from_g(kxy, g, eps)) / 2, (g + self.g_from_f(kyx, f, eps)) / 2


def _iterate(
    problem: _Problem,
    kxy,
    kyx,
    blur,
    f,
    g,
    tol,
    max_iter,
    overrelaxation,
    truncation: float | None = None,
):
    """Final-blur iterations until the plan's source marginal is right.

    After a g-update the target marginal is exact (balanced), and the next f-update tells the
    source-marginal error for free: row mass_i = a_i exp((f_i - f_new_i) / eps). Truncated
    kernels (given ``truncation``) choose their entries again once the potentials have moved
    by half the truncation since they were chosen: entries left out then may weigh more than
    exp(-truncation / 2) of a row's largest (the iterations then stalled, and diverged once
    the kernels were chosen again, measured on vessel-like trees).

    Returns:
        f, g, kxy, kyx (as last used), iterations done, final marginal error.
    """
    eps = blur * blur
    a = problem.a
    a_mass = float(a.sum())
    omega, error, best, done = overrelaxation, math.inf, math.inf, 0
    for _ in range(max_iter):
        if (
            truncation is not None
            and isinstance(kxy, SparseKernel)
            and done % _DRIFT_EVERY == 0
            and (
                kxy.drifted(problem.log_b + g / eps, truncation / 2)
                or kyx.drifted(problem.log_a + f / eps, truncation / 2)
            )
        ):
            log.debug(
                "the potentials moved: choosing the kernels' entries again (error %.2e)", error
            )
            kxy, kyx = refilter(kxy, kyx, f, g, eps, truncation)
            best = math.inf  # new entries move the error: no sign of over-relaxation trouble
        f_new = problem.f_from_g(kxy, g, eps)
        # clamped: far from convergence exp() would overflow float32 and read as divergence
        error = float((a * ((f - f_new) / eps).clamp(max=50).exp().sub(1).abs()).sum()) / a_mass
        if not bool(torch.isfinite(f_new).all()):
            raise SolverError(
                f"Sinkhorn diverged at blur {blur} mm (non-finite potentials); "
                "try a larger blur or float64"
            )
        log.debug("iteration %d: marginal error %.3e", done, error)
        if error < tol:
            break
        if error > 10 * best and omega != 1.0:  # not monotone under omega > 1: allow bumps
            log.debug("over-relaxation oscillates (error %.2e): plain updates from here", error)
            omega = 1.0
        best = min(best, error)
        # over-relaxation extrapolates: safe near the fixed point only (far from it, e.g. just
        # after truncated kernels took new entries, it overshot to errors of 1e9, measured)
        step = omega if error < _OVERRELAX_BELOW else 1.0
        f = (1 - step) * f + step * f_new
        g = (1 - step) * g + step * problem.g_from_f(kyx, f, eps)
        done += 1
    else:
        log.warning(
            "Sinkhorn stopped after %d iterations at blur %.3g mm with marginal error %.2e > tol %.1e",
            max_iter,
            blur,
            error,
            tol,
        )
    return f, g, kxy, kyx, done, error


def _solution(
    problem: _Problem, kxy, x, columns: _Columns, f, g, blur, iterations, error, backend
) -> OTSolution:
    """Matches and costs of the plan P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps), j over
    ``columns``; f (N,) and g (M,) are the potentials on the points."""
    eps = blur * blur
    h = columns.log_weights + columns.g / eps
    row_log_mass = f / eps + kxy.lse(h)  # log (sum_j P_ij / a_i)
    dim = x.shape[1]
    values = (
        columns.points
        if columns.spread is None
        else torch.cat([columns.points, columns.spread[:, None] / 2], 1)
    )
    averages = kxy.average(h, values)  # [E_j y_j, (E_j spread_j / 2,) E_j C_ij / eps] under row i
    confidence = row_log_mass.exp()
    row_cost = averages[:, -1] * eps + (averages[:, dim] if columns.spread is not None else 0)
    cost = float((problem.a * confidence * row_cost).sum())
    return OTSolution(
        f=f,
        g=g,
        targets=averages[:, :dim],
        confidence=confidence,
        cost=cost,
        dual=_dual_value(problem.a, problem.b, f, g, problem.reach),
        blur=blur,
        reach=problem.reach,
        iterations=iterations,
        marginal_error=error,
        backend=backend,
    )


def _dual_value(a, b, f, g, reach) -> float:
    """OT_eps estimate from the potentials (GeomLoss's formula; the plan-mass term is ~0)."""
    if reach is None:
        return float(a @ f + b @ g)
    rho = reach**2
    return float(rho * (a @ (1 - (-f / rho).exp())) + rho * (b @ (1 - (-g / rho).exp())))
