"""otreg's transform as files that ITK, ANTs and 3D Slicer read.

- Displacement fields: a 5D NIfTI of shape (X, Y, Z, 1, 3) with intent 1006 (displacement
  vector), vectors in RAS mm as the NIfTI standard says; ITK >= 5.4 (SimpleITK >= 2.4), ANTs
  and 3D Slicer read them and turn the vectors into their LPS themselves (older ITK misreads
  intent 1006: use the composite files there).
- Composite transforms: an ITK HDF5 transform file (``.h5``) holding an affine (LPS) and a
  displacement field (LPS vectors) that ``ReadTransform``, ``antsApplyTransforms`` and
  Slicer load as ONE transform: the rigid part holds everywhere, the field only on its grid.

A transform sampled on the FIXED grid that sends a fixed point p to where it was in the moving
image is what ITK/ANTs/Slicer use to resample the moving image onto the fixed one (a
pull-back). otreg's transform goes the other way (source/moving -> target/fixed), so that
one needs its inverse, found here by fixed-point iteration. Points are moved with the other
direction (moving -> fixed): ITK's and ANTs' convention for points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.frames import ras_to_lps
from . import Transform
from .grids import Grid
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


#: NIFTI_INTENT_DISPVECT: what 3D Slicer loads as a transform; vectors in RAS
DISPLACEMENT_INTENT = 1006


def displacement_image(vectors_ras: np.ndarray, grid: Grid):
    """A displacement NIfTI (nibabel image, intent 1006) of (X*Y*Z, 3) RAS vectors (mm) at the
    nodes of ``grid`` (C order)."""
    import nibabel as nib

    data = np.asarray(vectors_ras, dtype=np.float32).reshape(*grid.shape, 1, 3)
    image = nib.Nifti1Image(data, grid.affine)
    image.header.set_intent(DISPLACEMENT_INTENT)
    image.header.set_xyzt_units("mm")
    image.header.set_sform(grid.affine, code=1)
    image.header.set_qform(grid.affine, code=1)
    return image


def nonrigid_part(transform: Transform) -> Transform:
    """The transform without its rigid matrix: its fields alone."""
    return Transform(np.eye(4), transform.fields)


def pullback(transform: Transform, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Where each node y of a grid in TARGET space comes from: (x = phi^-1(y) (N, 3) RAS,
    residual |phi(x) - y| (N,) mm).

    x = rigid^-1 (y + w(y)) with y + w(y) the inverse of the fields alone (found by
    :func:`inverse_points`): the rigid part is exact everywhere, and w is the displacement
    field of the composite ``transform_fixed_to_moving.h5``.
    """
    y = grid.points()
    z, residual = inverse_points(nonrigid_part(transform), y)
    return apply_matrix(np.linalg.inv(transform.rigid), z), residual


def write_composite(
    path: Path, matrix_ras: np.ndarray, field_ras: np.ndarray, grid: Grid, *, field_first: bool
) -> Path:
    """Write an ITK composite transform file (``.h5``, atomically): a 4x4 RAS matrix and a
    displacement field of (X*Y*Z, 3) RAS vectors (mm) at the nodes of ``grid``.

    ``field_first``: the field acts first, then the matrix (x = M (y + w(y))); else the matrix
    first (x = M y + w(M y)). Written with SimpleITK in ITK's own layout (LPS, double).
    """
    import SimpleITK as sitk

    from ..io.atomic import atomic_path
    from ..io.frames import LPS_FROM_RAS, matrix_ras_to_lps

    matrix_lps = matrix_ras_to_lps(matrix_ras)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(tuple(matrix_lps[:3, :3].ravel()))
    affine.SetTranslation(tuple(matrix_lps[:3, 3]))
    vectors = ras_to_lps(field_ras).reshape(*grid.shape, 3)
    image = sitk.GetImageFromArray(vectors.transpose(2, 1, 0, 3).astype(np.float64), isVector=True)
    spacing = grid.spacing
    axes_lps = LPS_FROM_RAS @ grid.affine[:3, :3] / spacing
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetOrigin(tuple(float(v) for v in LPS_FROM_RAS @ grid.affine[:3, 3]))
    image.SetDirection(tuple(float(v) for v in axes_lps.ravel()))
    field = sitk.DisplacementFieldTransform(image)
    # ITK applies a composite's LAST transform first
    composite = sitk.CompositeTransform([affine, field] if field_first else [field, affine])
    with atomic_path(path) as tmp:
        sitk.WriteTransform(composite, str(tmp))
    return Path(path)
