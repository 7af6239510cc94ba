"""Dense displacement fields as NIfTI files that ITK, ANTs and 3D Slicer read.

ITK convention: a 5D NIfTI of shape (X, Y, Z, 1, 3), intent 'vector', whose vectors are in
LPS millimetres while the header affine is RAS (as nibabel and ITK both write NIfTI). A field
sampled on the FIXED grid that sends a fixed point p to p + v(p) in the moving image is what
ITK/ANTs/Slicer use to resample the moving image onto the fixed one (a pull-back). otreg's
transform goes the other way (source/moving -> target/fixed), so that field needs its inverse,
found here by fixed-point iteration.
"""

from __future__ import annotations

import numpy as np

from ..io.frames import ras_to_lps
from . import Transform
from .rigid import apply_matrix


def grid_over(points: np.ndarray, spacing: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned RAS grid covering ``points`` (N, 3) with ``margin`` mm around.

    Returns (shape (3,), affine (4, 4) voxel -> RAS mm).
    """
    lo = points.min(0) - margin
    shape = np.ceil((points.max(0) + margin - lo) / spacing).astype(int) + 1
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = lo
    return shape, affine


def grid_points(shape: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(X*Y*Z, 3) RAS centres of the voxels of a grid, in C order (the last index, k, fastest)."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    return apply_matrix(affine, ijk.astype(np.float64))


def inverse_points(
    transform: Transform, y: np.ndarray, iterations: int = 15, tol: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """x with phi(x) = y for (N, 3) target-space points ``y`` (mm RAS).

    Start from the transform's own inverse where it has one (SVF fields: exp(-v)), else from a
    scattered inverse (the fields' displacements regressed at the points they move to), then
    iterate x <- x + A^-1 (y - phi(x)) (A: the rigid part) on the points not yet within ``tol``
    mm, keeping each point's best iterate. Near the data this converges to 1e-2 mm; far from
    it, where the field extrapolates the nearest matches, it may not, and the start is kept:
    the returned residuals say where.

    Returns (x (N, 3), residual |phi(x) - y| (N,) in mm).
    """
    if transform.invertible:
        x = transform.inverse(y)
    else:
        x = apply_matrix(np.linalg.inv(transform.rigid), _scattered_inverse(transform, y))
    linear_inverse = np.linalg.inv(transform.rigid[:3, :3])
    best_x, best = x.copy(), np.full(len(y), np.inf)
    active = np.arange(len(y))
    for _ in range(iterations + 1):
        error = y[active] - transform(x[active])
        residual = np.linalg.norm(error, axis=1)
        better = residual < best[active]
        best[active[better]] = residual[better]
        best_x[active[better]] = x[active[better]]
        go_on = better & (residual > tol)  # stop where converged or where a step made it worse
        active = active[go_on]
        if not len(active):
            break
        x[active] += error[go_on] @ linear_inverse.T
    return best_x, best


def _scattered_inverse(transform: Transform, y: np.ndarray) -> np.ndarray:
    """Approximate phi^-1(y) without the rigid part: each field's own approximate inverse
    (kernel and ridge fields: -u regressed at their moved controls; SVF fields: exp(-v)),
    last field first."""
    z = y.copy()
    for field in reversed(transform.fields):
        z = field.approximate_inverse(z)
    return z


def displacement_image(vectors_ras: np.ndarray, shape: np.ndarray, affine: np.ndarray):
    """An ITK-style displacement NIfTI (nibabel image) from (X*Y*Z, 3) RAS vectors (mm)."""
    import nibabel as nib

    data = ras_to_lps(vectors_ras).reshape(*shape, 1, 3).astype(np.float32)
    image = nib.Nifti1Image(data, affine)
    image.header.set_intent("vector")
    image.header.set_xyzt_units("mm")
    image.header.set_sform(affine, code=1)
    image.header.set_qform(affine, code=1)
    return image
