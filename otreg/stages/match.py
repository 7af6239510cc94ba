"""Step 2: optimal-transport matching of the (aligned) source onto the target."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import SolverConfig
from ..errors import InputError
from ..ot import OTSolution, SolverOptions, sinkhorn
from ..pointcloud import PointCloud
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
    init_iterations: int | None = None,
    source_features: np.ndarray | None = None,
    target_features: np.ndarray | None = None,
) -> Matches:
    """Barycentric OT matches of (N, 3) source points onto (M, 3) target points (mm, RAS).

    Weights are taken as proportions (each cloud scaled to unit mass). ``blur`` and ``reach``
    are in mm (see :func:`otreg.ot.sinkhorn`). ``init``: matches of a previous solve between
    nearly the same clouds, whose potentials start this one (given up for the annealing where it
    has not converged within ``init_iterations``, if given: see :func:`otreg.ot.sinkhorn`).

    ``source_features`` (N, F) and ``target_features`` (M, F), already scaled to mm (see
    :func:`feature_columns`), are appended to the points: the cost becomes
    (|x - y|^2 + |f(x) - f(y)|^2) / 2, so points pair with points of similar features. The
    targets keep only the spatial part of the barycentric projection.
    """
    t = lambda array: to_torch(array, solver.dtype, device)  # noqa: E731
    if source_features is not None and target_features is not None:
        source_points = np.column_stack([source_points, source_features])
        target_points = np.column_stack([target_points, target_features])
    solution = sinkhorn(
        t(source_points),
        t(target_points),
        t(unit_mass(source_weights)),
        t(unit_mass(target_weights)),
        blur=blur,
        reach=reach,
        options=SolverOptions.from_config(solver),
        init=None if init is None else (init.solution.f, init.solution.g),
        init_iterations=init_iterations,
    )
    return Matches(
        solution.targets[:, :3].double().cpu().numpy(),
        solution.confidence.double().cpu().numpy(),
        solution,
    )


def feature_columns(cloud: PointCloud, weights: dict[str, float]) -> np.ndarray | None:
    """(N, F) extra cost columns of ``cloud``: each named point array times its weight (mm
    per unit of the array: 1 makes 1 mm of radius difference cost as much as 1 mm of
    distance); None when ``weights`` is empty.

    Raises:
        InputError: naming the cloud's file, when it lacks an array or the array is not finite.
    """
    if not weights:
        return None
    columns = []
    for name, weight in weights.items():
        if name not in cloud.features:
            arrays = ", ".join(repr(k) for k in cloud.features) or "none"
            raise InputError(
                cloud.source,
                f"has no point array {name!r} for the matching cost "
                f"(match.feature_weights; its point arrays: {arrays})",
            )
        values = np.asarray(cloud.features[name], dtype=np.float64).reshape(len(cloud), -1)
        if not np.isfinite(values).all():
            raise InputError(cloud.source, f"point array {name!r} has NaN or Inf values")
        columns.append(weight * values)
    return np.column_stack(columns)
