"""Step 1: rigid (or similarity) pre-alignment, robust to large rotations and partial overlap.

RobOT-style iterations (Shen, Feydy et al. 2021): OT matching of the moved source onto the
target -> weighted Procrustes of the source onto its matches -> repeat, with the blur
shrinking from a tenth of the diameter to ``rigid.blur``. Large rotations are found by starting
from each orientation that maps the source's principal axes onto the target's (and from no
rotation), screening the starts on a coarse copy and refining the one of least OT cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..config import RigidConfig, SolverConfig
from ..pointcloud import PointCloud
from ..sampling import downsample
from ..transforms.rigid import apply_matrix, matrix_difference, weighted_procrustes
from ._tensors import unit_mass
from .match import match

log = logging.getLogger(__name__)

_SCREEN_POINTS = 1000  # points per cloud when screening the starting orientations
_SCREEN_ITERATIONS = 5
_BLUR_DECAY = 0.7  # per iteration, from diameter / 10 down to rigid.blur
_PASSES = 2  # re-cluster the source through the estimate, then refine again


def _downsample_in_frame(cloud: PointCloud, matrix: np.ndarray, n: int, seed: int):
    """(points (n', 3) in the cloud's own frame, unit-mass weights) of ``cloud`` clustered on a
    grid of the frame that ``matrix`` maps it to (cluster means commute with affine maps)."""
    moved = downsample(cloud.with_points(apply_matrix(matrix, cloud.points)), n, seed=seed)
    return apply_matrix(np.linalg.inv(matrix), moved.points), unit_mass(moved.weights)


@dataclass
class RigidResult:
    """matrix: (4, 4) world RAS mm, source -> target. cost: final OT cost (mm^2)."""

    matrix: np.ndarray
    cost: float
    iterations: int
    start: int  # index of the winning start (0 = no rotation)
    history: list[dict] = field(default_factory=list)


def start_matrices(x: np.ndarray, a: np.ndarray, y: np.ndarray, b: np.ndarray, axes: bool) -> list[np.ndarray]:
    """Initial 4x4 guesses: centres of mass matched, with no rotation, then (``axes``) each of
    the 4 proper rotations that send the source's weighted principal axes onto the target's."""
    cx, cy = a @ x, b @ y
    rotations = [np.eye(3)]
    if axes:
        _, vx = np.linalg.eigh(((x - cx) * a[:, None]).T @ (x - cx))
        _, vy = np.linalg.eigh(((y - cy) * b[:, None]).T @ (y - cy))
        for s1 in (1, -1):
            for s2 in (1, -1):
                d = np.diag([s1, s2, 1.0])
                r = vy @ d @ vx.T
                d[2, 2] = np.sign(np.linalg.det(r))  # keep it a rotation
                rotations.append(vy @ d @ vx.T)
    starts = []
    for r in rotations:
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = cy - r @ cx
        starts.append(m)
    return starts


def _iterate(matrix, x, a, y, b, blurs, cfg: RigidConfig, solver: SolverConfig, device, history=None):
    """Run OT -> Procrustes for each blur in ``blurs``; stop early once at the final blur and the
    update is below tolerance. Returns (matrix, cost, iterations)."""
    cost, k, m = np.inf, 0, None
    for k, blur in enumerate(blurs, start=1):
        # The plan changes little from one iteration to the next: start from the last one.
        m = match(apply_matrix(matrix, x), a, y, b, blur=blur, reach=cfg.reach, solver=solver,
                  device=device, init=m)
        new = weighted_procrustes(x, m.targets, a * m.confidence, scale=cfg.scale)
        d_deg, d_mm = matrix_difference(new, matrix)
        matrix, cost = new, m.solution.cost
        if history is not None:
            history.append({"blur": blur, "cost": cost, "update_deg": d_deg, "update_mm": d_mm,
                            "sinkhorn_iterations": m.solution.iterations})
        if blur == blurs[-1] and d_deg < cfg.tol_deg and d_mm < cfg.tol_mm:
            break
    return matrix, cost, k


def rigid_align(
    source: PointCloud,
    target: PointCloud,
    cfg: RigidConfig,
    solver: SolverConfig,
    *,
    device: str = "cpu",
    seed: int = 0,
) -> RigidResult:
    """The rigid (``cfg.scale``: similarity) matrix mapping ``source`` onto ``target``.

    Both clouds are down-sampled to ``cfg.points``; weights count as proportions.
    """
    solver = solver.model_copy(update={"tol": cfg.solver_tol})
    src, tgt = downsample(source, cfg.points, seed=seed), downsample(target, cfg.points, seed=seed)
    x, a, y, b = src.points, unit_mass(src.weights), tgt.points, unit_mass(tgt.weights)
    coarse = max(cfg.blur, max(src.diameter, tgt.diameter) / 10)
    schedule = []
    blur = coarse
    while blur > cfg.blur:
        schedule.append(blur)
        blur *= _BLUR_DECAY
    schedule += [cfg.blur] * max(1, cfg.iterations - len(schedule))

    starts = start_matrices(x, a, y, b, cfg.principal_axes)
    best = 0
    if len(starts) > 1:
        # Screen on coarse copies: cheap, and at a large blur the cost ranks orientations well.
        s_src = downsample(src, _SCREEN_POINTS, seed=seed)
        s_tgt = downsample(tgt, _SCREEN_POINTS, seed=seed)
        sx, sa, sy, sb = s_src.points, unit_mass(s_src.weights), s_tgt.points, unit_mass(s_tgt.weights)
        screened = [
            _iterate(m, sx, sa, sy, sb, schedule[:_SCREEN_ITERATIONS], cfg, solver, device)
            for m in starts
        ]
        costs = [c for _, c, _ in screened]
        best = int(np.argmin(costs))
        log.info("rigid: start %d of %d wins the screening (OT costs %s mm^2)", best, len(starts),
                 ", ".join(f"{c:.4g}" for c in costs))
        starts[best] = screened[best][0]
    history: list[dict] = []
    matrix, iterations = starts[best], 0
    for _ in range(_PASSES):
        # Cluster the source on the target's grid, through the current estimate: once aligned,
        # both clouds are cut by the same cells, and down-sampling adds no bias to the fit
        # (measured on the CIP chest masks: 0.21 -> 0.0014 degrees).
        x, a = _downsample_in_frame(source, matrix, cfg.points, seed)
        matrix, cost, k = _iterate(matrix, x, a, y, b, schedule, cfg, solver, device, history)
        iterations += k
        schedule = schedule[-1:] * max(1, cfg.iterations // 2)  # later passes start aligned
    return RigidResult(matrix, cost, iterations, best, history)
