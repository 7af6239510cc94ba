"""Kernel fields evaluated on axis-aligned grids, one axis at a time.

A Gaussian is a product of one-dimensional Gaussians, so on a grid whose nodes are all the
(x_i, y_j, z_l) the kernel sum sum_k G(node, c_k) v_k is a product of three small tables
g_x (X, K), g_y (Y, K), g_z (Z, K): one matrix product of (X*Y, K) by (K, Z*d) instead of
X*Y*Z*K Gaussians. Exact (the same sums), whatever the widths: in float64 for kernel averages
(their denominators span float64's range), in float32 for ridge fields.
"""

from __future__ import annotations

import numpy as np

#: rows of the (X*Y, K) product table per matrix product (about 64 MB of float64)
_TABLE_ELEMENTS = 8_000_000


def _axis_tables(axes: list[np.ndarray], controls: np.ndarray, sigma: float) -> list[np.ndarray]:
    """(n_a, K) exp(-(axis_a - c_a)^2 / (2 sigma^2)) for each axis a."""
    return [
        np.exp(-((axis[:, None] - controls[None, :, a]) ** 2) / (2 * sigma * sigma))
        for a, axis in enumerate(axes)
    ]


def gaussian_sums(
    axes: list[np.ndarray],
    controls: np.ndarray,
    values: np.ndarray,
    sigma: float,
    dtype: type = np.float64,
) -> np.ndarray:
    """(X, Y, Z, d) sum_k exp(-|node - c_k|^2 / (2 sigma^2)) values_k over the grid of nodes
    (axes[0][i], axes[1][j], axes[2][l]) (mm, same frame as the (K, 3) ``controls``; values
    (K, d)); the tables and their products in ``dtype`` (the result float64)."""
    tables: list[np.ndarray] = [
        t.astype(dtype, copy=False) for t in _axis_tables(axes, controls, sigma)
    ]
    gx, gy, gz = tables
    nx, ny, nz, d = len(gx), len(gy), len(gz), values.shape[1]
    # (K, Z*d): each control's z-profile times its value
    right = (gz.T[:, :, None] * values.astype(dtype)[:, None, :]).reshape(len(controls), nz * d)
    out = np.empty((nx, ny, nz * d))
    rows = max(1, _TABLE_ELEMENTS // max(1, ny * len(controls)))
    for s in range(0, nx, rows):
        table = (gx[s : s + rows, None, :] * gy[None, :, :]).reshape(-1, len(controls))
        out[s : s + rows] = (table @ right).reshape(-1, ny, nz * d)
    return out.reshape(nx, ny, nz, d)


def grid_axes(shape: np.ndarray, affine: np.ndarray) -> list[np.ndarray] | None:
    """The three node coordinate vectors (mm) of an axis-aligned grid, or None when the affine
    (4, 4, voxel -> RAS mm) rotates or shears."""
    linear = affine[:3, :3]
    if np.count_nonzero(linear - np.diag(np.diag(linear))):
        return None
    return [affine[a, 3] + linear[a, a] * np.arange(n) for a, n in enumerate(shape)]


def field_on_grid(field, shape: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(X, Y, Z, d) values of a :class:`~otreg.transforms.ridge.RidgeField` or
    :class:`~otreg.transforms.field.KernelField` at the nodes of a grid (shape (3,), affine
    (4, 4) voxel -> RAS mm), in the C order of :func:`otreg.transforms.itk.grid_points`.

    Separable sums on axis-aligned grids; any other grid or field is evaluated node by node.
    """
    from .field import KernelField
    from .itk import grid_points
    from .ridge import RidgeField

    axes = grid_axes(shape, affine)
    if axes is None or not isinstance(field, RidgeField | KernelField):
        return field(grid_points(shape, affine)).reshape(*shape, -1)
    center = field.controls.mean(0)
    local = [axis - c for axis, c in zip(axes, center)]
    controls = field.controls - center
    if isinstance(field, KernelField):
        return _average_on_grid(field, local, controls, shape, affine)
    # float32 products, as the field's own evaluation (RidgeField: float32 kernel blocks); on
    # DIR-LAB case 1's grid 1.5e-5 mm from float64 and 2x faster (benchmarks/README.md)
    kernel = sum(
        gaussian_sums(local, controls, field.coefficients, s, np.float32) for s in field.sigmas
    )
    nodes = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    u = kernel / len(field.sigmas) + nodes @ field.affine[:3] + field.affine[3]
    if field.quadratic is not None:
        u += field.trend_curvature(nodes.reshape(-1, 3)).reshape(u.shape)
    if field.extra is None:
        return u
    return np.concatenate([u, field_on_grid(field.extra, shape, affine)], axis=-1)


def _average_on_grid(field, local, controls, shape, affine) -> np.ndarray:
    """A Nadaraya-Watson average on the grid: its numerator and denominator are both separable
    sums. Where every control is so far that the Gaussians underflow, the node is evaluated by
    the field itself (which then repeats the nearest controls' values)."""
    from .itk import grid_points

    w = field.weights[:, None]
    sums = gaussian_sums(local, controls, np.hstack([w * field.values, w]), field.sigma)
    den = sums[..., -1:]
    # 1e-200: far above float64's smallest normal, so the ratio keeps its digits
    near = den[..., 0] > 1e-200 * max(float(field.weights.max()), 1e-300)
    out = np.empty((*sums.shape[:3], field.values.shape[1]))
    out[near] = sums[near][:, :-1] / den[near]
    if not near.all():
        out[~near] = field(grid_points(shape, affine).reshape(*shape, 3)[~near])
    return out
