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

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..pointcloud import PointCloud
from ..sampling import downsample
from ..transforms.field import KernelField
from ..transforms.ridge import RidgeField, fit_ridge
from ..transforms.ridge_select import select_regularization
from ..transforms.svf import SVFField
from .match import Matches

log = logging.getLogger(__name__)


def smooth(
    points: np.ndarray,
    weights: np.ndarray,
    matches: Matches,
    sigma: float,
    *,
    regression: str = "gaussian",
    model: str = "displacement",
    regularization: float | str = 1.0,
    widths: Sequence[float] = (1.0,),
    ridge_points: int = 0,
    anisotropic: bool = False,
    trend: str = "affine",
    spacing: float | None = None,
    device: str = "cpu",
    info: dict | None = None,
    times: dict[str, Any] | None = None,
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
            smoothness weight ``regularization`` and Gaussians of ``widths`` x sigma, fitted to
            the matches averaged over voxel cells to at most ``ridge_points`` controls, 0 = all;
            ``anisotropic``: each weighted by :func:`sliding_weights`; ``trend``: "affine" or
            "quadratic", the part the smoothness weight leaves free); ``regularization =
            "auto"``: chosen from the matches (:func:`select_regularization`).
        model: "displacement" (the regression is the displacement) or "svf" (a velocity whose
            exponential has that displacement: fold-free).
        spacing: grid spacing of the velocity (svf), mm; default ``sigma / 2``.
        device: where the ridge fit runs ("cpu" or "cuda").
        info: filled with what was chosen from the data ({"regularization": lambda}).
        times: if given, receives "fit_s" (the regression) and "svf_s" (the velocity grid),
            seconds.
    """
    started = time.perf_counter()
    mass = weights * matches.confidence
    field: KernelField | RidgeField
    if regression == "gaussian":
        field = KernelField(
            points, np.column_stack([matches.targets - points, matches.confidence]), mass, sigma
        )
    elif regression == "ridge":
        sigmas = [sigma * w for w in widths]
        # weights counted in typical matches (regularization is per match), summed per cell
        data = downsample(
            PointCloud(
                points,
                mass / mass[mass > 0].mean(),
                {"displacement": matches.targets - points, "confidence": matches.confidence},
            ),
            ridge_points,
        )
        fit_weights = data.weights
        if anisotropic:
            fit_weights = fit_weights[:, None, None] * sliding_weights(
                data.points, points, weights, sigma
            )
        if regularization == "auto":
            lam, picks = select_regularization(
                data.points, data.features["displacement"], fit_weights, sigmas, trend=trend
            )
            log.info(
                "ridge smoothness weight from the matches (sigma %g mm): %.3g (%s)",
                sigma,
                lam,
                ", ".join(f"{k} {v:.3g}" for k, v in picks.items()),
            )
        else:
            lam = float(regularization)
        if info is not None:
            info["regularization"] = lam
        coefficients, affine = fit_ridge(
            data.points,
            data.features["displacement"],
            fit_weights,
            sigmas,
            lam,
            trend=trend,
            device=device,
        )
        # over the fit's controls too: a reported quantity, and sampling it on the svf model's
        # grid costs in proportion to the controls (benchmarks/README.md, design measurements)
        confidence = KernelField(
            data.points, data.features["confidence"][:, None], data.weights, sigma
        )
        field = RidgeField(data.points, coefficients, affine, sigmas, extra=confidence)
    else:
        raise ValueError(f"smooth.regression must be 'gaussian' or 'ridge', got {regression!r}")
    fitted = time.perf_counter()
    if times is not None:
        times["fit_s"] = fitted - started
    if model == "displacement":
        return field
    if model == "svf":
        velocity = velocity_field(field, points, spacing or sigma / 2, margin=sigma)
        if times is not None:
            times["svf_s"] = time.perf_counter() - fitted
        return velocity
    raise ValueError(f"smooth.model must be 'displacement' or 'svf', got {model!r}")


#: sliding_weights: local spreads below about this (mm) count as flat, not as a direction to slide in
SLIDING_NOISE = 1.0


def sliding_weights(
    at: np.ndarray, points: np.ndarray, weights: np.ndarray, radius: float
) -> np.ndarray:
    """(M, 3, 3) weight matrices that trust a match less along the local structure of the
    cloud at (M, 3) ``at`` (mm).

    OT matches between independent samplings of one surface or vessel slide within the surface
    or along the vessel, not across. The weighted covariance C of the (N, 3) ``points`` in a
    Gaussian window of width ``radius`` (mm) around a point has eigenvalues l_1 <= l_2 <= l_3;
    the weight along eigenvector i is (l_1 + t^2) / (l_i + t^2), t = SLIDING_NOISE: 1 across
    a surface or a vessel, near 0 along them, 1 in every direction in a blob of points.
    """
    import torch

    # coordinates centred (the second moments then keep their digits) and the outer products
    # x x^T as 9 columns: the windowed second moments are one matrix product (an einsum over
    # the window and both coordinates took most of a lung_surface registration)
    x = torch.as_tensor(points, dtype=torch.float64)
    center = x.mean(0)
    x = x - center
    c = torch.as_tensor(np.asarray(at, dtype=np.float64)) - center
    w = torch.as_tensor(weights, dtype=torch.float64)
    covariance = np.empty((len(c), 3, 3))
    outer = (x[:, :, None] * x[:, None, :]).reshape(len(x), 9)
    rows = max(1, 2_000_000 // len(x))
    for s in range(0, len(c), rows):
        window = torch.exp(-torch.cdist(c[s : s + rows], x).square_() / (2 * radius**2)) * w
        window /= window.sum(1, keepdim=True).clamp(min=1e-300)
        mean = window @ x
        second = (window @ outer).reshape(-1, 3, 3)
        covariance[s : s + rows] = (second - mean[:, :, None] * mean[:, None, :]).numpy()
    spread, axes = np.linalg.eigh(covariance)
    trust = (spread[:, :1] + SLIDING_NOISE**2) / (spread.clip(min=0) + SLIDING_NOISE**2)
    return np.einsum("kij,kj,klj->kil", axes, trust, axes)


def velocity_field(
    field: KernelField | RidgeField, points: np.ndarray, spacing: float, margin: float
) -> SVFField:
    """The :class:`SVFField` whose exponential has ``field``'s displacement (its columns 0-2,
    mm) on a grid of ``spacing`` mm over (N, 3) ``points`` and their images, plus ``margin``
    mm; the other columns (the confidence) ride along as its extra channels. Beyond the grid
    the field repeats the values of the grid's border.

    The images count: the inverse is evaluated there, and the lung base's points can move
    farther than the margin, beyond a grid over the points alone (where the inverse then
    repeated the border's values: benchmarks/README.md).
    """
    from ..transforms.itk import grid_over
    from ..transforms.on_grid import field_on_grid

    moved = points + field(points)[:, :3]
    shape, affine = grid_over(np.vstack([points, moved]), spacing, margin)
    shape = np.maximum(shape, 2)
    values = field_on_grid(field, shape, affine)
    return SVFField.fitted(values[..., :3], affine[:3, 3], spacing, values[..., 3:])
