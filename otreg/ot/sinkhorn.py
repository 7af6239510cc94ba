"""Log-domain Sinkhorn with epsilon-scaling, balanced or unbalanced: the solver's one entry.

Cost C(x, y) = |x - y|^2 / 2 (mm^2), entropic regularisation eps = blur^2 (blur in mm: the
standard deviation of the Gaussian kernel exp(-C / eps)); unbalanced marginals penalised by
rho * KL with rho = reach^2. The schedule follows Feydy's GeomLoss (symmetric, averaged updates
while blur decreases geometrically from the clouds' diameter), then, unlike GeomLoss, iterates
at the final blur until the plan's marginal error is below ``tol``: stopping early biases the
cost (by how much: benchmarks/README.md, design measurements).

This module checks the inputs, converts blur to eps (the one unit inside :mod:`otreg.ot`), and
hands the problem to a backend: :mod:`otreg.ot.dense` or :mod:`otreg.ot.multiscale`, which
share :mod:`otreg.ot.iterate` and return a :class:`otreg.ot.solution.Solved`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import torch

from ..errors import SolverError
from . import dense, multiscale
from .iterate import Problem, blur_schedule, eps_schedule
from .kernels import choose_backend
from .options import SolverOptions
from .solution import OTSolution, finish
from .sparse import truncation_backend

__all__ = ["OTSolution", "SolverOptions", "blur_schedule", "sinkhorn"]

log = logging.getLogger(__name__)


def sinkhorn(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    blur: float,
    reach: float | None = None,
    options: SolverOptions | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    init_iterations: int | None = None,
    **overrides,
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
        options: how to solve (:class:`SolverOptions`; default: the config schema's defaults;
            from a config: ``SolverOptions.from_config(config.solver)``).
        init: potentials (f, g) of a previous solve between nearly the same clouds (e.g. the
            last rigid iteration): the annealing is skipped and the iterations start from them.
        init_iterations: when given, the start from ``init`` is tried only where the
            annealing would end on the points themselves (not on final-blur clusters: see
            :func:`otreg.ot.multiscale.ends_on_points`), and given up where it diverges or has
            not converged within this many iterations (a start from a previous round's
            potentials diverged on a lobe pair whose target was cut in half); the solve then
            anneals as without ``init``.
        overrides: fields of :class:`SolverOptions` that replace those of ``options``
            (``tol=1e-4, max_iter=2000`` ...).

    Returns:
        An :class:`OTSolution`; ``targets`` are in the frame of ``x`` and ``y``. A warning is
        logged when the marginal error is still above ``tol`` after ``max_iter`` iterations.
    """
    options = replace(options or SolverOptions(), **overrides)
    if not blur > 0:
        raise SolverError(f"blur must be > 0 mm, got {blur}")
    dtype = options.torch_dtype(x.dtype)
    device = x.device
    x, y = x.to(dtype), y.to(dtype)
    a = torch.full((len(x),), 1 / len(x), dtype=dtype, device=device) if a is None else a.to(dtype)
    b = torch.full((len(y),), 1 / len(y), dtype=dtype, device=device) if b is None else b.to(dtype)
    if init is not None:
        init = (init[0].to(dtype), init[1].to(dtype))
    if reach is None and not math.isclose(float(a.sum()), float(b.sum()), rel_tol=1e-4):
        raise SolverError(
            f"balanced OT needs equal masses, got {float(a.sum()):.6g} and {float(b.sum()):.6g}"
        )
    truncated = options.multiscale and truncation_backend(options.kernels, x, y) is not None
    options = replace(options, backend=choose_backend(options.backend, device, truncated))

    # Centre on the joint centre of mass: costs are translation invariant, and |x|^2 terms of
    # the dense kernel lose float32 precision when the clouds sit 300 mm from the origin.
    center = (a @ x + b @ y) / (a.sum() + b.sum())
    x, y = x - center, y - center
    lo = torch.minimum(x.min(0).values, y.min(0).values)
    hi = torch.maximum(x.max(0).values, y.max(0).values)
    epsilons = eps_schedule(float((hi - lo).norm()), blur, options.scaling)
    eps = epsilons[-1]
    problem = Problem(a, b, reach)

    large = options.multiscale and len(x) * len(y) > options.dense_pairs
    solved = None
    if large and init is not None and truncated:
        solved = _warm_started(x, y, problem, eps, init, options, init_iterations)
    if solved is None and large and (init is None or truncated):
        solved = multiscale.solve(x, y, problem, epsilons, options)
    elif solved is None:
        solved = dense.solve(x, y, problem, epsilons, options, init)
    if solved.error >= options.tol:
        log.warning(
            "Sinkhorn stopped after %d iterations at blur %.3g mm with marginal error %.2e > "
            "tol %.1e (solver.max_iter = %d)",
            solved.final_iterations,
            blur,
            solved.error,
            options.tol,
            options.max_iter,
        )
    return finish(solved, eps, center)


def _warm_started(x, y, problem, eps, init, options: SolverOptions, iterations: int | None):
    """:func:`otreg.ot.multiscale.warm_start` from ``init``; where ``iterations`` is given, None
    where the annealing would end on clusters, or the start diverged or did not converge within
    that many iterations."""
    if iterations is None:
        return multiscale.warm_start(x, y, problem, eps, init, options)
    if not multiscale.ends_on_points(x, y, problem, eps, options):
        log.debug("the annealing would end on clusters: annealing instead of the start given")
        return None
    try:
        solved = multiscale.warm_start(
            x, y, problem, eps, init, replace(options, max_iter=min(iterations, options.max_iter))
        )
    except SolverError as err:
        log.debug("the start from the given potentials diverged (%s): annealing instead", err)
        return None
    if not solved.error < options.tol:
        log.debug(
            "the start from the given potentials stopped at marginal error %.2e after %d "
            "iterations: annealing instead",
            solved.error,
            solved.iterations,
        )
        return None
    return solved
