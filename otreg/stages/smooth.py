"""Step 3: smoothing the raw OT matches into a displacement field defined everywhere.

Two models (``smooth.model``):

- ``gaussian``: the Gaussian kernel regression of the matches is the displacement
  (:class:`~otreg.transforms.field.KernelField`);
- ``svf``: a stationary velocity field on a grid whose exponential (scaling and squaring) has
  that regression's displacement (:class:`~otreg.transforms.svf.SVFField`): diffeomorphic,
  with its inverse exp(-v).
"""

from __future__ import annotations

import numpy as np

from ..transforms.field import KernelField
from ..transforms.svf import SVFField, velocity_for
from .match import Matches


def smooth(
    points: np.ndarray,
    weights: np.ndarray,
    matches: Matches,
    sigma: float,
    *,
    model: str = "gaussian",
    spacing: float | None = None,
) -> KernelField | SVFField:
    """Gaussian kernel regression (width ``sigma`` mm) of the match displacements.

    Each match counts with its point's mass times its confidence, so points that unbalanced OT
    left unmatched barely pull the field. The field carries the confidence as a 4th column.

    Args:
        points: (N, 3) source points the matches start from, mm RAS.
        weights: (N,) their weights.
        model: "gaussian" (the regression is the displacement) or "svf" (a velocity whose
            exponential has that displacement: fold-free).
        spacing: grid spacing of the velocity (svf), mm; default ``sigma / 2``.
    """
    values = np.column_stack([matches.targets - points, matches.confidence])
    field = KernelField(points, values, weights * matches.confidence, sigma)
    if model == "gaussian":
        return field
    if model == "svf":
        return velocity_field(field, points, spacing or sigma / 2, margin=sigma)
    raise ValueError(f"smooth.model must be 'gaussian' or 'svf', got {model!r}")


def velocity_field(field: KernelField, points: np.ndarray, spacing: float, margin: float) -> SVFField:
    """The :class:`SVFField` whose exponential has ``field``'s displacement (its columns 0-2,
    mm) on a grid of ``spacing`` mm over (N, 3) ``points`` plus ``margin`` mm; the other
    columns (the confidence) ride along as its extra channels. Beyond the grid the field, as
    ``field`` far from its controls, repeats the nearest values."""
    from ..transforms.itk import grid_over, grid_points

    shape, affine = grid_over(points, spacing, margin)
    shape = np.maximum(shape, 2)
    values = field(grid_points(shape, affine)).reshape(*shape, -1)
    velocity = velocity_for(values[..., :3], spacing)
    return SVFField(velocity, affine[:3, 3], spacing, values[..., 3:])
