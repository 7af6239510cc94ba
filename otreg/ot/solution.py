"""The result of a solve: the plan as the backends leave it, and :class:`OTSolution`, what
callers read (matches, costs, the certificate's inputs as public :class:`Plan`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import SolverError
from .iterate import Problem
from .kernels import Kernel


@dataclass(frozen=True)
class Columns:
    """The columns of a plan: the target points, or their clusters (then each cluster's mass
    goes to its points in proportion to their weights, at the extra cost of half its spread).

    points (m, D), log_weights (m,), potential g (m,), spread (m,) mm^2 or None for points.
    """

    points: torch.Tensor
    log_weights: torch.Tensor
    g: torch.Tensor
    spread: torch.Tensor | None


@dataclass(frozen=True)
class TruncatedSupport:
    """The entries a truncated plan keeps: int32 CSR (crow (n + 1,), col (nnz,)) from the
    points x to ``columns``."""

    crow: torch.Tensor
    col: torch.Tensor
    columns: Columns


@dataclass(frozen=True)
class Plan:
    """The entropic plan P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps) of a solve, as the solver
    holds it: points centred on their joint centre of mass and, on the multiscale path, sorted
    along a space-filling curve (so x, f are NOT in input order).

    Attributes:
        x: (N, D), y: (M, D) points, mm; a (N,), b (M,) weights; f (N,), g (M,) potentials,
            mm^2; eps: mm^2; truncated: the kept entries of a truncated plan (None: all pairs).
    """

    x: torch.Tensor
    y: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    eps: float
    truncated: TruncatedSupport | None = None

    def bounds(self) -> tuple[float, float]:
        """[lower, upper] (mm^2) that contain the exact OT cost between the two clouds, for
        these potentials (any: converged or not); see :func:`otreg.ot.certificate.ot_bounds`."""
        from .certificate import ot_bounds

        return ot_bounds(self.x, self.y, self.a, self.b, self.f, self.g, self.eps, self.truncated)


@dataclass
class OTSolution:
    """The result of one OT solve between a source x (N, 3) and a target y (M, 3), mm.

    Attributes:
        f, g: dual potentials (N,), (M,), mm^2, at the final ``eps``, in input order.
        targets: (N, 3) barycentric projection sum_j P_ij y_j / sum_j P_ij, mm, in the frame
            of the inputs: where each source point is matched.
        confidence: (N,) transported mass / own mass (1 for balanced OT at convergence; smaller
            where unbalanced OT leaves a point unmatched).
        cost: primal transport cost sum_ij P_ij |x_i - y_j|^2 / 2, mm^2 (weights as given).
        dual: entropic OT value from the potentials, mm^2.
        eps: the final entropic regularisation, mm^2 (= blur^2).
        reach: mm (None: balanced OT).
        iterations: Sinkhorn updates done, all scales together.
        final_iterations: updates at the final eps (at most the options' ``max_iter``).
        marginal_error: L1 error of the plan's source marginal relative to the source mass.
        transported_mass: the fraction of the source mass that the plan moves,
            sum_i a_i confidence_i / sum_i a_i (1 for balanced OT at convergence).
        backend: 'torch', 'keops' (dense) or 'multiscale'.
        plan: the plan as the solver holds it (for the certificate, :meth:`bounds`).
    """

    f: torch.Tensor
    g: torch.Tensor
    targets: torch.Tensor
    confidence: torch.Tensor
    cost: float
    dual: float
    eps: float
    reach: float | None
    iterations: int
    final_iterations: int
    marginal_error: float
    transported_mass: float
    backend: str
    plan: Plan = field(repr=False)

    @property
    def blur(self) -> float:
        """The final blur, mm (eps = blur^2)."""
        return math.sqrt(self.eps)

    def bounds(self) -> tuple[float, float]:
        """[lower, upper] (mm^2) that contain the exact OT cost between the two clouds
        (balanced OT only; see :mod:`otreg.ot.certificate`). Costs O(N M), about four dense
        iterations: computed on request, not by every solve."""
        if self.reach is not None:
            raise SolverError("OT bounds are defined for balanced OT only (reach = None)")
        return self.plan.bounds()


@dataclass
class Solved:
    """What a backend (:mod:`otreg.ot.dense`, :mod:`otreg.ot.multiscale`) hands back: the
    converged potentials in its own order and the kernel of the plan's rows.

    Attributes:
        x: (N, D), y: (M, D) centred points in the backend's order (``order_x``, ``order_y``:
            the permutations of the inputs, None when unsorted); problem: their weights.
        f (N,), g (M,): potentials on the points; kxy: the kernel from x to ``columns``.
        iterations, final_iterations: updates done in all, and at the final eps.
        error: the final marginal error; backend: its name; support: (crow, col) of a
            truncated kxy, or None.
    """

    x: torch.Tensor
    y: torch.Tensor
    problem: Problem
    f: torch.Tensor
    g: torch.Tensor
    kxy: Kernel
    columns: Columns
    iterations: int
    final_iterations: int
    error: float
    backend: str
    order_x: torch.Tensor | None = None
    order_y: torch.Tensor | None = None
    support: tuple[torch.Tensor, torch.Tensor] | None = None


def finish(solved: Solved, eps: float, center: torch.Tensor) -> OTSolution:
    """Matches and costs of the plan P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps), j over the
    plan's columns, moved back by ``center`` (D,) and put back in input order."""
    problem, columns, x, f = solved.problem, solved.columns, solved.x, solved.f
    h = columns.log_weights + columns.g / eps
    row_log_mass = f / eps + solved.kxy.lse(h)  # log (sum_j P_ij / a_i)
    dim = x.shape[1]
    values = (
        columns.points
        if columns.spread is None
        else torch.cat([columns.points, columns.spread[:, None] / 2], 1)
    )
    # [E_j y_j, (E_j spread_j / 2,) E_j C_ij / eps] under row i
    averages = solved.kxy.average(h, values)
    confidence = row_log_mass.exp()
    row_cost = averages[:, -1] * eps + (averages[:, dim] if columns.spread is not None else 0)
    moved_mass = problem.a * confidence
    cost = float((moved_mass * row_cost).sum())
    source_mass = float(problem.a.sum())
    plan = Plan(
        x,
        solved.y,
        problem.a,
        problem.b,
        f,
        solved.g,
        eps,
        None if solved.support is None else TruncatedSupport(*solved.support, columns),
    )
    targets = averages[:, :dim] + center
    g = solved.g
    if solved.order_x is not None and solved.order_y is not None:
        f, targets, confidence = (_unsort(t, solved.order_x) for t in (f, targets, confidence))
        g = _unsort(g, solved.order_y)
    return OTSolution(
        f=f,
        g=g,
        targets=targets,
        confidence=confidence,
        cost=cost,
        dual=dual_value(problem.a, problem.b, solved.f, solved.g, problem.reach),
        eps=eps,
        reach=problem.reach,
        iterations=solved.iterations,
        final_iterations=solved.final_iterations,
        marginal_error=solved.error,
        transported_mass=float(moved_mass.sum()) / source_mass if source_mass > 0 else 0.0,
        backend=solved.backend,
        plan=plan,
    )


def _unsort(value: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``value`` given in the order ``order`` of some input, put back in input order."""
    restored = torch.empty_like(value)
    restored[order] = value
    return restored


def dual_value(a, b, f, g, reach) -> float:
    """OT_eps estimate from the potentials (GeomLoss's formula; the plan-mass term is ~0)."""
    if reach is None:
        return float(a @ f + b @ g)
    rho = reach**2
    return float(rho * (a @ (1 - (-f / rho).exp())) + rho * (b @ (1 - (-g / rho).exp())))
