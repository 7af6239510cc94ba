"""Step 3: smoothing the raw OT matches into a displacement field defined everywhere.

Two regressions of the matches (``smooth.regression``, per round):

- ``gaussian``: their Nadaraya-Watson average with a Gaussian kernel
  (:class:`~otreg.transforms.field.KernelField`);
- ``ridge``: kernel ridge regression, an affine part plus multi-width Gaussians fitted by
  penalised least squares (:class:`~otreg.transforms.ridge.RidgeField`);

and two models of the last round's field (``smooth.model``):

- ``displacement``: the regression is the displacement;
- ``svf``: a stationary velocity field on a grid whose exponential (scaling and squaring) has
  the regression's displacement (:class:`~otreg.transforms.svf.SVFField`): diffeomorphic,
  with its inverse exp(-v).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..transforms.field import KernelField
from ..transforms.ridge import RidgeField, fit_ridge
from ..transforms.svf import SVFField, velocity_for
from .match import Matches


def smooth(
    points: np.ndarray,
    weights: np.ndarray,
    matches: Matches,
    sigma: float,
    *,
    regression: str = "gaussian",
    model: str = "displacement",
    regularization: float = 1.0,
    widths: Sequence[float] = (1.0,),
    spacing: float | None = None,
    device: str = "cpu",
) -> KernelField | RidgeField | SVFField:
    """Regression of the match displacements into a field; columns 0-2 of its values are the
    displacement (mm), column 3 the smoothed match confidence.

    Each match counts with its point's mass times its confidence, so points that unbalanced OT
    left unmatched barely pull the field.

    Args:
        points: (N, 3) source points the matches start from, mm RAS.
        weights: (N,) their weights.
        sigma: kernel width, mm.
        regression: "gaussian" (kernel average) or "ridge" (kernel ridge regression with
            smoothness weight ``regularization`` and Gaussians of ``widths`` x sigma).
        model: "displacement" (the regression is the displacement) or "svf" (a velocity whose
            exponential has that displacement: fold-free).
        spacing: grid spacing of the velocity (svf), mm; default ``sigma / 2``.
        device: where the ridge fit runs ("cpu" or "cuda").
    """
    mass = weights * matches.confidence
    if regression == "gaussian":
        field = KernelField(points, np.column_stack([matches.targets - points, matches.confidence]),
                            mass, sigma)
    elif regression == "ridge":
        sigmas = [sigma * w for w in widths]
        coefficients, affine = fit_ridge(points, matches.targets - points, mass, sigmas,
                                         regularization, device=device)
        confidence = KernelField(points, matches.confidence[:, None], mass, sigma)
        field = RidgeField(points, coefficients, affine, sigmas, extra=confidence)
    else:
        raise ValueError(f"smooth.regression must be 'gaussian' or 'ridge', got {regression!r}")
    if model == "displacement":
        return field
    if model == "svf":
        return velocity_field(field, points, spacing or sigma / 2, margin=sigma)
    raise ValueError(f"smooth.model must be 'displacement' or 'svf', got {model!r}")


def velocity_field(field: KernelField | RidgeField, points: np.ndarray, spacing: float,
                   margin: float) -> SVFField:
    """The :class:`SVFField` whose exponential has ``field``'s displacement (its columns 0-2,
    mm) on a grid of ``spacing`` mm over (N, 3) ``points`` plus ``margin`` mm; the other
    columns (the confidence) ride along as its extra channels. Beyond the grid the field
    repeats the values of the grid's border."""
    from ..transforms.itk import grid_over, grid_points

    shape, affine = grid_over(points, spacing, margin)
    shape = np.maximum(shape, 2)
    values = field(grid_points(shape, affine)).reshape(*shape, -1)
    velocity = velocity_for(values[..., :3], spacing)
    return SVFField(velocity, affine[:3, 3], spacing, values[..., 3:])
