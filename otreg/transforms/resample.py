"""Resample a moving image onto a fixed (reference) grid with otreg's transform.

The pull-back x(y) = phi^-1(y) is computed on a grid over the reference image (every
``grid_spacing`` mm, whole voxels: :func:`otreg.transforms.grids.image_grid`) exactly as in
``transform_fixed_to_moving.h5``, then interpolated trilinearly to every reference voxel;
the moving image is sampled there as ITK's resampler does: a voxel whose source lies beyond
the moving image's voxels (more than half a voxel outside) gets ``fill``; linear
interpolation uses the border voxels up to there.
"""

from __future__ import annotations

import logging

import numpy as np

from . import Transform
from .grids import image_grid
from .rigid import apply_matrix

log = logging.getLogger(__name__)

INTERPOLATIONS = ("auto", "linear", "nearest", "label")

# reference voxels interpolated per block (the label vote's (block, 8, 8) arrays stay ~150 MB)
_BLOCK_VOXELS = 250_000

_CORNERS = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])


def choose_interpolation(data: np.ndarray, interpolation: str) -> str:
    """``auto`` -> ``label`` for integer images >= 0 (masks, label maps), else ``linear``."""
    from ..io.volumes import _is_integer_valued

    if interpolation != "auto":
        return interpolation
    if _is_integer_valued(data) and (data.size == 0 or data.min() >= 0):
        return "label"
    return "linear"


def resample_volume(
    data: np.ndarray,
    affine: np.ndarray,
    reference_shape: tuple[int, ...],
    reference_affine: np.ndarray,
    transform: Transform,
    *,
    interpolation: str = "linear",
    grid_spacing: float = 4.0,
    fill: float = 0.0,
) -> np.ndarray:
    """The moving image ``data`` (I, J, K) with voxel -> RAS ``affine``, resampled on the
    reference grid (``reference_shape``, voxel -> RAS ``reference_affine``) through
    ``transform`` (source/moving -> target/fixed, mm RAS).

    Args:
        interpolation: "linear" (trilinear, float32 out), "nearest" or "label" (each voxel
            takes the label with the largest trilinear weight among its 8 neighbours; the
            input's type out): label maps stay integer with smooth borders.
        grid_spacing: mm between the nodes where the transform is evaluated exactly.
        fill: value of voxels whose source lies outside the moving image.

    Returns:
        (X, Y, Z) array on the reference grid.
    """
    if interpolation not in INTERPOLATIONS[1:]:
        raise ValueError(
            f"interpolation must be one of {INTERPOLATIONS[1:]}, got {interpolation!r}"
        )
    from .itk import pullback
    from .svf import sample_grid

    grid, step, first = image_grid(reference_shape, reference_affine, grid_spacing)
    source, residual = pullback(transform, grid)
    log.debug(
        "pull-back on %s nodes: inverse residual median %.3g mm, max %.3g mm",
        grid.shape,
        np.median(residual),
        residual.max(),
    )
    index_field = apply_matrix(np.linalg.inv(affine), source).reshape(*grid.shape, 3)
    out_dtype = np.float32 if interpolation == "linear" else data.dtype
    out = np.empty(reference_shape, dtype=out_dtype)
    plane = int(np.prod(reference_shape[1:]))
    rows = max(1, _BLOCK_VOXELS // max(plane, 1))
    jk = np.stack(
        np.meshgrid(*(np.arange(n) for n in reference_shape[1:]), indexing="ij"), -1
    ).reshape(-1, 2)
    for start in range(0, reference_shape[0], rows):
        i = np.arange(start, min(start + rows, reference_shape[0]))
        ijk = np.column_stack([np.repeat(i, len(jk)), np.tile(jk, (len(i), 1))])
        index = sample_grid(index_field, (ijk - first) / step)
        values = _interpolate(data, index, interpolation, fill)
        out[i[0] : i[-1] + 1] = values.reshape(len(i), *reference_shape[1:])
    return out


def _interpolate(data: np.ndarray, index: np.ndarray, mode: str, fill: float) -> np.ndarray:
    """Values of ``data`` at (N, 3) fractional voxel indices; ``fill`` beyond half a voxel
    outside."""
    size = np.array(data.shape[:3])
    inside = np.all((index >= -0.5) & (index <= size - 0.5), axis=1)
    if mode == "nearest":
        v = np.clip(np.floor(index + 0.5).astype(np.int64), 0, size - 1)
        values = data[v[:, 0], v[:, 1], v[:, 2]]
    else:
        base = np.floor(index).astype(np.int64)
        frac = index - base
        corners = np.clip(base[:, None, :] + _CORNERS[None], 0, size - 1)  # (N, 8, 3)
        weights = np.prod(np.where(_CORNERS[None], frac[:, None, :], 1 - frac[:, None, :]), -1)
        samples = data[corners[..., 0], corners[..., 1], corners[..., 2]]  # (N, 8)
        if mode == "linear":
            values = (weights * samples).sum(1)
        else:  # label: the value with the largest total weight among the 8 neighbours
            same = samples[:, :, None] == samples[:, None, :]
            score = (same * weights[:, None, :]).sum(2)
            values = samples[np.arange(len(samples)), score.argmax(1)]
    return np.where(inside, values, np.asarray(fill).astype(values.dtype))
