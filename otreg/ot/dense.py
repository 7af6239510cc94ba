"""The dense backend: every pair (i, j) at every epsilon, O(N M) per update (small problems,
or any problem with ``multiscale = False``), on torch blocks or KeOps."""

from __future__ import annotations

import torch

from .iterate import Problem, iterate
from .kernels import make_kernel
from .options import SolverOptions
from .solution import Columns, Solved


def solve(
    x: torch.Tensor,
    y: torch.Tensor,
    problem: Problem,
    epsilons: list[float],
    options: SolverOptions,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Solved:
    """GeomLoss's annealing (symmetric averaged updates while eps decreases along
    ``epsilons``, mm^2), then iterations at ``epsilons[-1]`` to ``options.tol``.

    Args:
        x: (N, D), y: (M, D) centred points, mm; problem: their weights.
        options: ``backend`` already resolved ('torch' or 'keops').
        init: potentials (f, g) to start the final iterations from, skipping the annealing.
    """
    backend, eps = options.backend, epsilons[-1]
    kxy, kyx = make_kernel(backend, x, y, eps), make_kernel(backend, y, x, eps)
    if init is not None:
        f, g = init
        updates = 0
    else:
        f, g = problem.symmetric_start(
            make_kernel(backend, x, y, epsilons[0]),
            make_kernel(backend, y, x, epsilons[0]),
            epsilons[0],
        )
        for e in epsilons:
            f, g = problem.symmetric_update(
                make_kernel(backend, x, y, e), make_kernel(backend, y, x, e), e, f, g
            )
        updates = len(epsilons) + 1
    final = iterate(problem, kxy, kyx, eps, f, g, options)
    return Solved(
        x=x,
        y=y,
        problem=problem,
        f=final.f,
        g=final.g,
        kxy=final.kxy,
        columns=Columns(y, problem.log_b, final.g, None),
        iterations=updates + final.done,
        final_iterations=final.done,
        error=final.error,
        backend=backend,
    )
