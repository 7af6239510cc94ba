"""register(): the three steps, timed, with their diagnostics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import native
from .config import Config
from .diagnostics import suspect_checks
from .errors import ConfigError, SolverError
from .metrics import residual
from .pointcloud import PointCloud
from .sampling import downsample, downsample_onto
from .stages.match import Matches, feature_columns, match
from .stages.rigid import rigid_align
from .stages.smooth import smooth
from .transforms import Transform
from .transforms.gridded import field_at
from .transforms.rigid import apply_matrix

log = logging.getLogger(__name__)


@dataclass
class RegistrationResult:
    """What :func:`register` returns.

    Attributes:
        transform: maps source (moving) points to the target (fixed) space, mm RAS.
        metrics: JSON-ready diagnostics (times in s, distances in mm, OT costs in mm^2).
        source, target: the measures actually registered (after down-sampling).
        moved: (N, 3) ``source`` points after the whole transform.
        confidence: (N,) match confidence of each source point in the last round.
    """

    transform: Transform
    metrics: dict[str, Any]
    source: PointCloud
    target: PointCloud
    moved: np.ndarray
    confidence: np.ndarray = field(repr=False)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError("device = 'cuda' but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return device


#: a round started from the potentials of the round before anneals after all when that start
#: has not converged within this many iterations (copd1's took 28-58)
WARM_START_ITERATIONS = 100

#: the smallest blur (and sigma) relative to the clouds' extent that float32 costs resolve
MIN_RELATIVE_LENGTH = 1e-6


def _require_finite(values: np.ndarray, step: str, advice: str) -> None:
    """SolverError (exit 1) naming ``step`` if ``values`` hold NaN or Inf: a non-finite result
    must never reach a file."""
    values = np.asarray(values)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise SolverError(
            f"{step} gave {bad} non-finite value(s) (NaN or Inf), so nothing was written: {advice}"
        )


def _check_lengths(cfg: Config, src: PointCloud, tgt: PointCloud) -> None:
    """Refuse blurs and sigmas far below the clouds' extent (they give NaN, not a result)."""
    both = np.vstack([src.points, tgt.points])
    extent = float(np.linalg.norm(both.max(axis=0) - both.min(axis=0)))
    smallest = extent * MIN_RELATIVE_LENGTH
    lengths = [("rigid.blur", cfg.rigid.blur)] if cfg.rigid.enabled else []
    lengths += [("match.blur", b) for b in cfg.match.blur]
    lengths += [("smooth.sigma", s) for s in cfg.smooth.sigma]
    for key, value in lengths:
        if value < smallest:
            raise ConfigError(
                f"{key} = {value:g} mm is too small for clouds {extent:.1f} mm across: "
                f"use at least {smallest:.2g} mm ({MIN_RELATIVE_LENGTH:g} of their extent)"
            )


def _check_grids(cfg: Config, src: PointCloud, tgt: PointCloud) -> None:
    """Estimate the memory of every grid the run will build and refuse it above the budget
    (:mod:`otreg.limits`) before the work starts, naming the key that sets its spacing."""
    from .limits import BYTES_PER_GRID_NODE, check_memory, grid_nodes

    spacing = cfg.output.grid_spacing
    grids = []
    if cfg.output.dense_field:
        margin = cfg.output.grid_margin
        nodes = grid_nodes(src.points, spacing, margin) + grid_nodes(tgt.points, spacing, margin)
        grids.append(("output.grid_spacing", nodes, f"the dense fields on a {spacing:g} mm grid"))
    if cfg.output.jacobian:
        nodes = grid_nodes(src.points, spacing, spacing)
        grids.append(("output.grid_spacing", nodes, f"the Jacobian on a {spacing:g} mm grid"))
    if cfg.smooth.model == "svf":
        sigma = cfg.rounds[-1].sigma
        step = cfg.smooth.svf_spacing or sigma / 2
        key = "smooth.svf_spacing" if cfg.smooth.svf_spacing else "smooth.sigma"
        nodes = grid_nodes(src.points, step, sigma)
        grids.append((key, nodes, f"the velocity field on a {step:g} mm grid"))
    for key, nodes, what in grids:
        check_memory(nodes * BYTES_PER_GRID_NODE, f"{what} ({nodes:.3g} nodes)", key=key)


def _check_kernels(cfg: Config, src: PointCloud, tgt: PointCloud, device: str) -> None:
    """Estimate the memory of the CPU solver's truncated kernels in the round of the largest
    blur (the most entries per point) and refuse it above the budget before the work starts
    (the dense and the CUDA solvers reduce in blocks: no kernel is kept)."""
    from .limits import BYTES_PER_KERNEL_ENTRY, check_memory, kernel_entries_per_row

    if not cfg.rounds or device != "cpu" or not cfg.solver.multiscale:
        return
    blur = max(b for b, *_ in cfg.rounds)
    n = len(src) if cfg.input.points == 0 else min(len(src), cfg.input.points)
    entries = kernel_entries_per_row(src.points, tgt.points, blur, cfg.solver.truncation)
    check_memory(
        n * entries * BYTES_PER_KERNEL_ENTRY,
        f"the OT kernels at match.blur = {blur:g} mm ({n} source points, about "
        f"{entries:.0f} kernel entries each)",
        key="input.points",
    )


def _certificate(solution, *, last: bool) -> dict[str, Any]:
    """Bounds around the exact OT cost of the last balanced round (O(N M): once per run)."""
    if not last or solution.reach is not None:
        return {}
    lower, upper = solution.bounds()
    return {
        "ot_bounds_mm2": [lower, upper],
        "ot_relative_gap": (upper - lower) / max(abs(lower), 1e-300),
    }


def register(
    source: PointCloud,
    target: PointCloud,
    config: Config | None = None,
    *,
    on_step: Callable[[str], None] | None = None,
) -> RegistrationResult:
    """Register ``source`` (moving) onto ``target`` (fixed): rigid -> OT matching -> smoothing.

    Args:
        source, target: weighted clouds, mm, world RAS.
        config: every setting (defaults: :class:`otreg.config.Config`).
        on_step: called with a short description as each step starts (progress display).
    """
    import torch

    cfg = config or Config()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    step = on_step or (lambda text: None)
    times: dict[str, float] = {}

    for cloud in (source, target):  # before any work: a missing array is an input error
        feature_columns(cloud, cfg.match.feature_weights)
    t0 = time.perf_counter()
    step("sampling")
    tgt = downsample(target, cfg.input.points, seed=cfg.seed)
    tgt_features = feature_columns(tgt, cfg.match.feature_weights)
    times["sampling_s"] = time.perf_counter() - t0
    _check_lengths(cfg, source, tgt)
    _check_grids(cfg, source, tgt)
    _check_kernels(cfg, source, tgt, device)
    metrics: dict[str, Any] = {
        "device": device,
        "kernels": native.info(),  # the compiled CPU kernels, or why the torch ones run
    }

    rigid = np.eye(4)
    if cfg.rigid.enabled:
        step("rigid alignment")
        t0 = time.perf_counter()
        try:
            # all points: the rigid step clusters them itself, through its estimate
            result = rigid_align(
                source, target, cfg.rigid, cfg.solver, device=device, seed=cfg.seed
            )
        except np.linalg.LinAlgError as err:
            raise SolverError(
                f"rigid alignment failed ({err}): check that the clouds overlap and their "
                "coordinates are in mm, or raise rigid.blur"
            ) from None
        rigid = result.matrix
        _require_finite(
            rigid,
            "rigid alignment",
            "check that the clouds overlap and their coordinates are in mm, or raise rigid.blur",
        )
        times["rigid_s"] = time.perf_counter() - t0
        metrics["rigid"] = {
            "matrix": rigid.tolist(),
            "ot_cost_mm2": result.cost,
            "iterations": result.iterations,
            "start": result.start,
        }
    # The source is clustered on the target's cells, through the rigid estimate: where the
    # motion is rigid, both are cut alike and the matches find no motion in the grids.
    t0 = time.perf_counter()
    src = downsample_onto(source, tgt, rigid, cfg.input.points, seed=cfg.seed)
    src_features = feature_columns(src, cfg.match.feature_weights)
    times["sampling_s"] += time.perf_counter() - t0
    metrics["points"] = {"source": len(src), "target": len(tgt)}
    metrics["residual_before"] = residual(src.points, src.weights, tgt.points)
    moved = apply_matrix(rigid, src.points)
    metrics["residual_after_rigid"] = residual(moved, src.weights, tgt.points)

    # Every round fits the WHOLE displacement from the rigidly aligned source to its current
    # matches (as CPD/BCPD re-fit their motion), rather than composing per-round increments:
    # composed kernel averages stack their smoothing bias (DIR-LAB: 1.36 vs 1.27 mm mean TRE).
    aligned, field_k, rounds, confidence = moved, None, [], np.ones(len(src))
    # a round at the blur and reach of the round before starts from its potentials (the
    # source moved a little since): the annealing would find about the same plan again
    previous: Matches | None = None
    previous_key: tuple[float, float | None] | None = None
    planned, skipped, last_move = cfg.rounds, [], np.inf
    t0 = time.perf_counter()
    for k, (blur, sigma, reach, regression) in enumerate(planned, start=1):
        last = k == len(planned)
        if (
            not last
            and k > 1
            and planned[k - 1] == planned[k - 2]
            and last_move < cfg.match.tolerance
        ):
            log.info(
                "round %d skipped: the round before moved the points by %.3f mm (< match.tolerance)",
                k,
                last_move,
            )
            skipped.append(k)
            continue
        step(f"OT matching, round {k}/{len(cfg.rounds)} (blur {blur:g} mm, sigma {sigma:g} mm)")
        t1 = time.perf_counter()
        # where the round's time_s went: "ot_s", "fit_s", "svf_s" (the velocity grid, last
        # round), "field_s" (the round's field at the points)
        round_times: dict[str, float] = {}
        matches = match(
            moved,
            src.weights,
            tgt.points,
            tgt.weights,
            blur=blur,
            reach=reach,
            solver=cfg.solver,
            device=device,
            source_features=src_features,
            target_features=tgt_features,
            init=previous if previous_key == (blur, reach) else None,
            init_iterations=WARM_START_ITERATIONS,
        )
        previous, previous_key = matches, (blur, reach)
        _require_finite(
            np.column_stack([matches.targets, matches.confidence]),
            f"OT matching, round {k} (blur {blur:g} mm)",
            "raise match.blur, or set solver.dtype = 'float64'",
        )
        round_times["ot_s"] = time.perf_counter() - t1
        # Only the last round's field becomes the transform: the rounds before need the
        # regression at the points alone, not the svf model's velocity grid.
        chosen: dict[str, float] = {}
        field_k = smooth(
            aligned,
            src.weights,
            matches,
            sigma,
            regression=regression,
            model=cfg.smooth.model if last else "displacement",
            regularization=cfg.smooth.regularization,
            widths=cfg.smooth.ridge_widths,
            ridge_points=cfg.smooth.ridge_points,
            anisotropic=cfg.smooth.anisotropic,
            trend=cfg.smooth.trend,
            spacing=cfg.smooth.svf_spacing,
            device=device,
            info=chosen,
            times=round_times,
        )
        t2 = time.perf_counter()
        # the rounds before the last only steer the next round's matching: their wide kernel
        # averages through a grid where that is cheaper (otreg.transforms.gridded: <= 0.014 mm)
        fitted = aligned + (field_k(aligned) if last else field_at(field_k, aligned))[:, :3]
        round_times["field_s"] = time.perf_counter() - t2
        _require_finite(
            fitted,
            f"smoothing, round {k} (sigma {sigma:g} mm)",
            "raise smooth.sigma (or smooth.regularization for ridge)",
        )
        # Matching and fitting converge slowly to their joint fixed point (each round closes
        # a fraction of the gap); intermediate rounds may overshoot towards it.
        step_k = 1.0 if last else cfg.match.extrapolation
        update = step_k * (fitted - moved)
        moved = moved + update
        last_move = float(src.weights @ np.linalg.norm(update, axis=1) / src.weights.sum())
        confidence = matches.confidence
        sol = matches.solution
        rounds.append(
            {
                "round": k,
                "blur_mm": blur,
                "sigma_mm": sigma,
                "reach_mm": reach,
                "regression": regression,
                **chosen,
                "ot_cost_mm2": sol.cost,
                "ot_dual_mm2": sol.dual,
                "iterations": sol.iterations,
                "marginal_error": sol.marginal_error,
                "transported_mass": sol.transported_mass,
                "backend": sol.backend,
                **_certificate(sol, last=last),
                "residual_after": residual(moved, src.weights, tgt.points),
                "moved_mm": last_move,
                "time_s": time.perf_counter() - t1,
            }
        )
        rounds[-1]["times"] = round_times
    times["nonrigid_s"] = time.perf_counter() - t0
    metrics["rounds"] = rounds
    metrics["rounds_skipped"] = skipped
    metrics["residual_after"] = residual(moved, src.weights, tgt.points)
    metrics["transported_mass"] = rounds[-1]["transported_mass"] if rounds else 1.0
    transform = Transform(rigid, [] if field_k is None else [field_k])
    metrics.update(_quality(transform, src, cfg, times, step))
    metrics["checks"] = suspect_checks(metrics, src.points, src.weights, confidence, cfg.checks)
    for flag in metrics["checks"]["flags"]:
        log.warning(
            "suspect registration of %s: %s: %s", source.source, flag["title"], flag["detail"]
        )
    metrics["times"] = times
    log.info(
        "registered %s -> %s: residual %.2f -> %.2f mm",
        source.source,
        target.source,
        metrics["residual_before"]["mean_mm"],
        metrics["residual_after"]["mean_mm"],
    )
    return RegistrationResult(transform, metrics, src, tgt, moved, confidence)


def _quality(
    transform: Transform,
    src: PointCloud,
    cfg: Config,
    times: dict[str, float],
    step: Callable[[str], None],
) -> dict[str, Any]:
    """metrics.json's transform quality (:func:`otreg.quality.transform_quality`), timed."""
    from .quality import transform_quality

    t0 = time.perf_counter()
    if cfg.output.jacobian:
        step("Jacobian determinant")
    out = transform_quality(
        transform, src.points, cfg.output.grid_spacing, jacobian=cfg.output.jacobian
    )
    if out:
        times["quality_s"] = time.perf_counter() - t0
    return out
