"""Step 1: rigid (or similarity) pre-alignment, robust to large rotations and partial overlap.

RobOT-style iterations (Shen, Feydy et al. 2021): OT matching of the moved source onto the
target -> weighted Procrustes of the source onto its matches -> repeat, with the blur
shrinking from a tenth of the diameter to ``rigid.blur``. Large rotations are found by starting
from each orientation that maps the source's principal axes onto the target's (and from no
rotation), screening the starts on small coarse copies and continuing the one of least OT cost.

The rounds get finer as the blur shrinks: the coarse blurs run on coarse copies of both clouds
(a cluster well below the blur changes the matches little), and only the final blur runs on
``rigid.points`` points, warm-started from one round to the next.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ..config import RigidConfig, SolverConfig
from ..pointcloud import PointCloud
from ..sampling import downsample, downsample_onto
from ..transforms.rigid import apply_matrix, matrix_difference, weighted_procrustes
from ._tensors import unit_mass
from .match import match

log = logging.getLogger(__name__)

_SCREEN_POINTS = 500  # points per cloud when screening the starting orientations
_SCREEN_ITERATIONS = 4  # coarsest blurs of the schedule run by every start
_COARSE_POINTS = 1000  # points per cloud for the blurs above rigid.blur
_BLUR_DECAY = 0.7  # per iteration, from diameter / 10 down to rigid.blur
_ALIGNED = 0.9  # cosine between successive updates above which the rounds are extrapolated
_MAX_JUMP = 5.0  # at most this many times the last update
_PATIENCE = 3  # final-blur rounds without a smaller update before stopping
_PASSES = 2  # final-blur passes: re-cluster the source through the estimate, then refine again


def _onto(cloud: PointCloud, reference: PointCloud, matrix: np.ndarray, n: int, seed: int):
    """(points (n', 3) in the cloud's own frame, unit-mass weights) of ``cloud`` clustered on
    ``reference``'s cells through ``matrix`` (see :func:`otreg.sampling.downsample_onto`)."""
    moved = downsample_onto(cloud, reference, matrix, n, seed=seed)
    return moved.points, unit_mass(moved.weights)


@dataclass
class RigidResult:
    """matrix: (4, 4) world RAS mm, source -> target. cost: final OT cost (mm^2)."""

    matrix: np.ndarray
    cost: float
    iterations: int
    start: int  # index of the winning start (0 = no rotation)
    history: list[dict] = field(default_factory=list)


def start_matrices(
    x: np.ndarray, a: np.ndarray, y: np.ndarray, b: np.ndarray, axes: bool
) -> list[np.ndarray]:
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


def _rotvec(r: np.ndarray) -> np.ndarray:
    """Rotation vector (3,), radians, of a 3x3 rotation of angle below 180 degrees."""
    angle = np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))
    skew = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / 2
    return skew * (angle / np.sin(angle) if angle > 1e-12 else 1.0)


def _rotation(v: np.ndarray) -> np.ndarray:
    """3x3 rotation of rotation vector ``v`` (radians), Rodrigues' formula."""
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]]) / angle
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _step(old: np.ndarray, new: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """The rigid update new @ inv(old) as a 6-vector in mm: rotation vector times ``radius``
    (the arc it moves points at that distance), then the displacement of ``center``."""
    delta = new @ np.linalg.inv(old)
    return np.concatenate(
        [_rotvec(delta[:3, :3]) * radius, delta[:3, :3] @ center + delta[:3, 3] - center]
    )


def _extrapolate(
    old: np.ndarray, step: np.ndarray, factor: float, center: np.ndarray, radius: float
) -> np.ndarray:
    """``old`` moved ``factor`` times by ``step`` (see :func:`_step`), rotating about ``center``."""
    r = _rotation(step[:3] * factor / radius)
    delta = np.eye(4)
    delta[:3, :3] = r
    delta[:3, 3] = center + factor * step[3:] - r @ center
    return delta @ old


def _iterate(
    matrix,
    x,
    a,
    y,
    b,
    blurs,
    cfg: RigidConfig,
    solver: SolverConfig,
    device,
    history=None,
    stop: bool = True,
):
    """Run OT -> Procrustes for each blur in ``blurs``; stop early (``stop``) once at the final
    blur and the update is below tolerance, or has stopped shrinking (the noise floor of the
    loosely converged plans). Returns (matrix, cost, iterations)."""
    cost, k, m = np.inf, 0, None
    # where the moved source is, and how far its points are from there: the scale that turns
    # a rotation into mm
    center = apply_matrix(matrix, a @ x)
    radius = float(np.sqrt(a @ ((apply_matrix(matrix, x) - center) ** 2).sum(1)))
    previous, smallest, stalled = None, np.inf, 0
    for blur in blurs:
        # The plan changes little from one iteration to the next: start from the last one.
        m = match(
            apply_matrix(matrix, x),
            a,
            y,
            b,
            blur=blur,
            reach=cfg.reach,
            solver=solver,
            device=device,
            init=m,
        )
        new = weighted_procrustes(x, m.targets, a * m.confidence, scale=cfg.scale)
        d_deg, d_mm = matrix_difference(new, matrix)
        factor = 1.0
        if blur == blurs[-1] and not cfg.scale:
            # At a fixed blur the rounds converge linearly, slowly on vessel trees (each round
            # removes a small share of the remaining rotation): when two successive updates point
            # the same way, jump to where their geometric series ends (Besl & McKay 1992).
            step = _step(matrix, new, center, radius)
            if previous is not None:
                ratio = np.linalg.norm(step) / np.linalg.norm(previous)
                cos = step @ previous / (np.linalg.norm(step) * np.linalg.norm(previous) + 1e-300)
                if cos > _ALIGNED and ratio < 1:
                    factor = min(1 / (1 - ratio), _MAX_JUMP)
            if factor > 1:
                new = _extrapolate(matrix, step, factor, center, radius)
                previous = None  # the next two updates tell whether the jump went too far
            else:
                previous = step
        matrix, cost = new, m.solution.cost
        if history is not None:
            history.append(
                {
                    "blur": blur,
                    "points": len(x),
                    "cost": cost,
                    "update_deg": d_deg,
                    "update_mm": d_mm,
                    "jump": float(factor),
                    "sinkhorn_iterations": m.solution.iterations,
                }
            )
        if stop and blur == blurs[-1]:
            if d_deg < cfg.tol_deg and d_mm < cfg.tol_mm:
                break
            size = max(d_deg / cfg.tol_deg, d_mm / cfg.tol_mm)
            stalled = 0 if size < smallest else stalled + 1
            smallest = min(smallest, size)
            if stalled >= _PATIENCE:
                log.debug("rigid: updates stopped shrinking at %.3g deg, %.3g mm", d_deg, d_mm)
                break
    return matrix, cost, k


def _copy(cloud: PointCloud, n: int, seed: int):
    small = downsample(cloud, n, seed=seed)
    return small.points, unit_mass(small.weights)


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

    Both clouds are down-sampled to ``cfg.points`` for the final blur (fewer above it);
    weights count as proportions.
    """
    t0 = time.perf_counter()
    solver = solver.model_copy(update={"tol": cfg.solver_tol})
    src, tgt = downsample(source, cfg.points, seed=seed), downsample(target, cfg.points, seed=seed)
    x, a, y, b = src.points, unit_mass(src.weights), tgt.points, unit_mass(tgt.weights)
    coarse = max(cfg.blur, max(src.diameter, tgt.diameter) / 10)
    schedule = []
    blur = coarse
    while blur > cfg.blur:
        schedule.append(blur)
        blur *= _BLUR_DECAY
    history: list[dict] = []
    iterations = 0

    starts = start_matrices(x, a, y, b, cfg.principal_axes)
    best, matrix = 0, starts[0]
    screen = schedule[:_SCREEN_ITERATIONS]
    if len(starts) > 1 and screen:
        # Screen on small copies: cheap, and at a large blur the cost ranks orientations well.
        sx, sa = _copy(src, _SCREEN_POINTS, seed)
        sy, sb = _copy(tgt, _SCREEN_POINTS, seed)
        screened = [
            _iterate(m, sx, sa, sy, sb, screen, cfg, solver, device, stop=False) for m in starts
        ]
        costs = [c for _, c, _ in screened]
        best = int(np.argmin(costs))
        log.info(
            "rigid: start %d of %d wins the screening (OT costs %s mm^2)",
            best,
            len(starts),
            ", ".join(f"{c:.4g}" for c in costs),
        )
        matrix = screened[best][0]
        schedule = schedule[len(screen) :]
    if schedule:
        # The rest of the coarse blurs on coarse copies; the source is clustered through the
        # estimate, so that both clouds are cut by nearly the same cells.
        coarse_target = downsample(target, _COARSE_POINTS, seed=seed)
        cx, ca = _onto(source, coarse_target, matrix, _COARSE_POINTS, seed)
        cy, cb = coarse_target.points, unit_mass(coarse_target.weights)
        matrix, _, k = _iterate(
            matrix, cx, ca, cy, cb, schedule, cfg, solver, device, history, stop=False
        )
        iterations += k
    t1 = time.perf_counter()
    rounds = cfg.iterations
    for p in range(_PASSES):
        # Cluster the source on the target's cells, through the current estimate: once
        # aligned, both clouds are cut by the same cells, and down-sampling adds no bias to the
        # fit. Nothing to re-cluster when the source is used whole.
        if p > 0 and len(source) <= cfg.points:
            break
        x, a = _onto(source, tgt, matrix, cfg.points, seed)
        matrix, cost, k = _iterate(
            matrix, x, a, y, b, [cfg.blur] * rounds, cfg, solver, device, history
        )
        iterations += k
        rounds = max(1, cfg.iterations // 2)  # later passes start aligned
    log.info(
        "rigid: %.2f s (coarse rounds %.2f s), %d rounds, OT cost %.4g mm^2",
        time.perf_counter() - t0,
        t1 - t0,
        iterations,
        cost,
    )
    return RigidResult(matrix, cost, iterations, best, history)
