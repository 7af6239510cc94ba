"""Step 2: optimal-transport matching of the (aligned) source onto the target."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import SolverConfig
from ..ot import OTSolution, sinkhorn
from ._tensors import to_torch, unit_mass


@dataclass
class Matches:
    """Where each source point goes: targets (N, 3) mm RAS, confidence (N,), and the solve."""

    targets: np.ndarray
    confidence: np.ndarray
    solution: OTSolution


def match(
    source_points: np.ndarray,
    source_weights: np.ndarray,
    target_points: np.ndarray,
    target_weights: np.ndarray,
    *,
    blur: float,
    reach: float | None,
    solver: SolverConfig,
    device: str = "cpu",
    init: Matches | None = None,
) -> Matches:
    """Barycentric OT matches of (N, 3) source points onto (M, 3) target points (mm, RAS).

    Weights are taken as proportions (each cloud scaled to unit mass). ``blur`` and ``reach``
    are in mm (see :func:`otreg.ot.sinkhorn`). ``init``: matches of a previous solve between
    nearly the same clouds, whose potentials start this one.
    """
    t = lambda array: to_torch(array, solver.dtype, device)  # noqa: E731
    solution = sinkhorn(
        t(source_points),
        t(target_points),
        t(unit_mass(source_weights)),
        t(unit_mass(target_weights)),
        blur=blur,
        reach=reach,
        scaling=solver.scaling,
        tol=solver.tol,
        max_iter=solver.max_iter,
        overrelaxation=solver.overrelaxation,
        backend=solver.backend,
        multiscale=solver.multiscale,
        truncation=solver.truncation,
        init=None if init is None else (init.solution.f, init.solution.g),
    )
    return Matches(
        solution.targets.double().cpu().numpy(),
        solution.confidence.double().cpu().numpy(),
        solution,
    )
