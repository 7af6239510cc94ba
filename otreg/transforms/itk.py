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
    """(X*Y*Z, 3) RAS centres of the voxels of a grid, in NIfTI (x fastest last) C order."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    return apply_matrix(affine, ijk.astype(np.float64))


def inverse_points(transform: Transform, y: np.ndarray, iterations: int = 30) -> tuple[np.ndarray, float]:
    """x with phi(x) = y for (N, 3) target-space points ``y`` (mm RAS), by x <- x + (y - phi(x)).

    The iteration contracts wherever the non-rigid part is a small, smooth perturbation of the
    rigid map (Jacobian of u below 1 in norm), which the smoothing step ensures in practice.
    Returns (x, max residual |phi(x) - y| in mm).
    """
    x = apply_matrix(np.linalg.inv(transform.rigid), y)
    residual = np.inf
    for _ in range(iterations):
        error = y - transform(x)
        residual = float(np.abs(error).max()) if len(error) else 0.0
        if residual < 1e-3:
            break
        x = x + apply_matrix(np.linalg.inv(transform.rigid), error) - apply_matrix(
            np.linalg.inv(transform.rigid), np.zeros((1, 3))
        )
    return x, residual


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
