"""What every backend shares: the problem's updates, the annealing schedule and the loop at the
final epsilon (as GeomLoss shares its softmin and epsilon schedule between its backends).

Inside :mod:`otreg.ot` the entropic regularisation is ``eps`` (mm^2): the user's blur (mm) is
converted once, eps = blur^2, by :func:`otreg.ot.sinkhorn.sinkhorn`. The kernels are any
:class:`otreg.ot.kernels.Kernel` (dense or truncated).
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import torch

from ..errors import SolverError
from .kernels import Kernel, TruncatedKernel
from .options import SolverOptions

log = logging.getLogger(__name__)

_DRIFT_EVERY = 5  # iterations between checks of the truncated kernels' drift
_OVERRELAX_BELOW = 0.1  # marginal error under which the updates are over-relaxed


def blur_schedule(diameter: float, blur: float, scaling: float) -> list[float]:
    """Geometric blur sequence from ``diameter`` down to ``blur`` (mm), ratio ``scaling``."""
    if diameter <= blur:
        return [blur]
    steps = math.ceil(math.log(blur / diameter) / math.log(scaling))
    return [diameter * scaling**k for k in range(steps)] + [blur]


def eps_schedule(diameter: float, blur: float, scaling: float) -> list[float]:
    """The annealing's epsilons (mm^2): the squares of :func:`blur_schedule`."""
    return [s * s for s in blur_schedule(diameter, blur, scaling)]


class Problem:
    """Weights and marginal penalty of one solve: the updates every backend shares.

    Args:
        a: (n,), b: (m,) weights >= 0; reach: unbalanced OT length, mm (rho = reach^2), or
            None for balanced OT.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, reach: float | None):
        self.a, self.b, self.reach = a, b, reach
        self.log_a, self.log_b = a.log(), b.log()  # -inf for zero weights: no mass there

    def sorted(self, order_a: torch.Tensor, order_b: torch.Tensor) -> Problem:
        """The same problem with its weights permuted."""
        return Problem(self.a[order_a], self.b[order_b], self.reach)

    def damping(self, eps: float) -> float:
        return 1.0 if self.reach is None else 1.0 / (1.0 + eps / self.reach**2)

    def f_from_g(self, kxy: Kernel, g: torch.Tensor, eps: float) -> torch.Tensor:
        """Softmin update f_i = -eps log sum_j b_j exp((g_j - C_ij) / eps), damped if unbalanced."""
        return -self.damping(eps) * eps * kxy.lse(self.log_b + g / eps)

    def g_from_f(self, kyx: Kernel, f: torch.Tensor, eps: float) -> torch.Tensor:
        return -self.damping(eps) * eps * kyx.lse(self.log_a + f / eps)

    def translated(self, f: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f + t, g - t) with the t that maximises the unbalanced dual (Sejourne et al. 2022,
        translation-invariant Sinkhorn); (f, g) unchanged if balanced.

        The coupling term of the dual does not see t; the two marginal penalties
        -rho <a, exp(-f / rho)> - rho <b, exp(-g / rho)> give t = rho / 2 log(A / B),
        A = <a, exp(-f / rho)>, B = <b, exp(-g / rho)>. Sinkhorn's damped updates shrink this
        mode by only (1 + eps / rho)^-2 per iteration: with a reach far above the blur they
        stalled for tens of thousands of iterations short of the tolerance.
        """
        if self.reach is None:
            return f, g
        rho = self.reach**2
        log_ratio = torch.logsumexp(self.log_a - f / rho, 0) - torch.logsumexp(
            self.log_b - g / rho, 0
        )
        t = rho / 2 * log_ratio
        return f + t, g - t

    def symmetric_start(self, kxy: Kernel, kyx: Kernel, eps: float):
        return (
            self.f_from_g(kxy, torch.zeros_like(self.b), eps),
            self.g_from_f(kyx, torch.zeros_like(self.a), eps),
        )

    def symmetric_update(self, kxy: Kernel, kyx: Kernel, eps: float, f, g):
        """GeomLoss's averaged update at one epsilon of the annealing."""
        return (f + self.f_from_g(kxy, g, eps)) / 2, (g + self.g_from_f(kyx, f, eps)) / 2


class Iterated(NamedTuple):
    """What :func:`iterate` returns: the potentials, the kernels as last (re)chosen, the
    updates done and the last measured source-marginal error (relative L1)."""

    f: torch.Tensor
    g: torch.Tensor
    kxy: Kernel
    kyx: Kernel
    done: int
    error: float


def iterate(
    problem: Problem,
    kxy: Kernel,
    kyx: Kernel,
    eps: float,
    f: torch.Tensor,
    g: torch.Tensor,
    options: SolverOptions,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
) -> Iterated:
    """Iterations at ``eps`` until the plan's source marginal error is below ``tol``, at most
    ``max_iter`` (by default the options' ``tol`` and ``max_iter``).

    After a g-update the target marginal is exact (balanced), and the next f-update tells the
    source-marginal error for free: row mass_i = a_i exp((f_i - f_new_i) / eps). The error is
    measured once more after the last update, so ``max_iter = 0`` only measures it. Truncated
    kernels (:class:`TruncatedKernel`) choose their entries again once the potentials have
    moved by half the options' ``truncation`` since they were chosen: entries left out then
    may weigh more than exp(-truncation / 2) of a row's largest (the iterations then stalled,
    and diverged once the kernels were chosen again, on vessel-like trees).

    Over-relaxation (omega = ``options.overrelaxation``) starts once the error is below
    ``_OVERRELAX_BELOW`` and falls back to plain updates if the error grows tenfold.
    """
    tol = options.tol if tol is None else tol
    max_iter = options.max_iter if max_iter is None else max_iter
    truncation = options.truncation
    a = problem.a
    a_mass = float(a.sum())
    omega, error, best, done = options.overrelaxation, math.inf, math.inf, 0
    while True:
        if (
            done % _DRIFT_EVERY == 0
            and isinstance(kxy, TruncatedKernel)
            and isinstance(kyx, TruncatedKernel)
            and (
                kxy.drifted(problem.log_b + g / eps, truncation / 2)
                or kyx.drifted(problem.log_a + f / eps, truncation / 2)
            )
        ):
            log.debug(
                "the potentials moved: choosing the kernels' entries again (error %.2e)", error
            )
            kxy, kyx = kxy.search(f, g, eps, truncation)
            best = math.inf  # new entries move the error: no sign of over-relaxation trouble
        f_new = problem.f_from_g(kxy, g, eps)
        # clamped: far from convergence exp() would overflow float32 and read as divergence
        error = float((a * ((f - f_new) / eps).clamp(max=50).exp().sub(1).abs()).sum()) / a_mass
        if not bool(torch.isfinite(f_new).all()):
            raise SolverError(
                f"Sinkhorn diverged at blur {math.sqrt(eps):.4g} mm (non-finite potentials); "
                "try a larger blur or float64"
            )
        log.debug("iteration %d: marginal error %.3e", done, error)
        if error < tol or done >= max_iter:
            break
        if error > 10 * best and omega != 1.0:  # not monotone under omega > 1: allow bumps
            log.debug("over-relaxation oscillates (error %.2e): plain updates from here", error)
            omega = 1.0
        best = min(best, error)
        # over-relaxation extrapolates: safe near the fixed point only (far from it, e.g. just
        # after truncated kernels took new entries, it overshot by orders of magnitude)
        step = omega if error < _OVERRELAX_BELOW else 1.0
        f = (1 - step) * f + step * f_new
        g = (1 - step) * g + step * problem.g_from_f(kyx, f, eps)
        f, g = problem.translated(f, g)
        done += 1
    return Iterated(f, g, kxy, kyx, done, error)
