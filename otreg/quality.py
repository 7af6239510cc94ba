"""Quality of a transform itself: Jacobian determinant (folding) and inverse consistency.

Both act on any :class:`otreg.transforms.base.SpatialTransform` (an
:class:`otreg.transforms.Transform` in the pipeline) through its point map only
(``map_points``, ``jacobian``, ``inverse``), in world RAS mm: they measure what ``otreg warp``
and the written fields do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .metrics import distance_summary

if TYPE_CHECKING:
    from .transforms.base import SpatialTransform

#: finite-difference step, as a fraction of the grid spacing
STEP_FRACTION = 0.25


def jacobian_determinants(
    transform, points: np.ndarray, spacing: float, *, margin: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """det D phi on a regular grid over the bounding box of (N, 3) ``points`` (mm, RAS).

    The grid (``spacing`` mm) reaches ``margin`` mm beyond the box (default: one spacing).
    D phi by central differences of ``transform.apply`` with step h = ``STEP_FRACTION`` x
    spacing: column i = (phi(x + h e_i) - phi(x - h e_i)) / 2h.

    Returns (det (X*Y*Z,), grid shape (3,), grid affine (4, 4) voxel -> RAS mm); the
    determinants in the C order of :func:`otreg.transforms.itk.grid_points`.
    """
    from .transforms.itk import grid_over, grid_points

    shape, affine = grid_over(
        np.asarray(points, dtype=np.float64), spacing, spacing if margin is None else margin
    )
    x = grid_points(shape, affine)
    return determinants_at(transform, x, STEP_FRACTION * spacing), shape, affine


def determinants_at(transform: SpatialTransform, x: np.ndarray, step: float) -> np.ndarray:
    """(N,) det D phi at (N, 3) points ``x`` (mm): the transform's Jacobian by central
    differences of step ``step`` mm (:meth:`~otreg.transforms.base.SpatialTransform.jacobian`)."""
    return np.linalg.det(transform.jacobian(x, step))


def jacobian_summary(transform, points: np.ndarray, spacing: float) -> dict[str, Any]:
    """min, 1st percentile, median, max of det D phi over a grid over ``points`` (see
    :func:`jacobian_determinants`), the share of grid points where it is <= 0
    ("folding_fraction"), the grid spacing (mm), the number of grid points and their
    "histogram" (:func:`determinant_histogram`, for the report)."""
    det, _, _ = jacobian_determinants(transform, points, spacing)
    return {
        "min": float(det.min()),
        "p1": float(np.percentile(det, 1)),
        "median": float(np.median(det)),
        "max": float(det.max()),
        "folding_fraction": float(np.mean(det <= 0)),
        "grid_spacing_mm": float(spacing),
        "points": len(det),
        "histogram": determinant_histogram(det),
    }


def determinant_histogram(det: np.ndarray, bins: int = 50) -> dict[str, list[float]]:
    """{"edges": bins + 1 values, "counts": bins values} of the determinants over
    [min(0, min det), max(2, 99.9th percentile)]: 0 (folding) and 1 (volume kept) always
    in view; larger outliers are counted in the last bin."""
    low = min(0.0, float(det.min()))
    high = max(2.0, float(np.percentile(det, 99.9)))
    counts, edges = np.histogram(np.clip(det, low, high), bins=bins, range=(low, high))
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()}


def inverse_consistency(transform, points: np.ndarray) -> dict[str, float] | None:
    """|phi^-1(phi(x)) - x| (mm) at (N, 3) source ``points``: mean / median / p95 / max.

    ``None`` when the transform has no inverse of its own (Gaussian kernel fields).
    """
    if not getattr(transform, "invertible", False):
        return None
    x = np.asarray(points, dtype=np.float64)
    return distance_summary(np.linalg.norm(transform.inverse(transform(x)) - x, axis=1))


def transform_quality(
    transform, points: np.ndarray, grid_spacing: float, *, jacobian: bool = True
) -> dict[str, Any]:
    """What ``metrics.json`` and ``otreg evaluate`` report of a transform over a source cloud:
    "jacobian" (:func:`jacobian_summary` on a ``grid_spacing`` mm grid over the (N, 3)
    ``points``, if ``jacobian``) and "inverse_consistency_mm" (:func:`inverse_consistency`, for
    transforms with an inverse of their own)."""
    out: dict[str, Any] = {}
    if jacobian:
        out["jacobian"] = jacobian_summary(transform, points, grid_spacing)
    consistency = inverse_consistency(transform, points)
    if consistency is not None:
        out["inverse_consistency_mm"] = consistency
    return out
