"""Regular grids on which otreg samples its transform: dense fields and image resampling.

A :class:`Grid` is a shape and a voxel -> world RAS affine (mm), as a NIfTI image has. Two
kinds: a box over point clouds (axis-aligned RAS, :func:`box_grid`) and a grid over an image
(:func:`image_grid`): the image's own axes and orientation, every ``step``-th voxel, so that
the grid nodes are voxel centres and a grid with step 1 is the image's voxel grid itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rigid import apply_matrix


@dataclass(frozen=True)
class Grid:
    """A regular grid: ``shape`` (3,) nodes, ``affine`` (4, 4) node index -> world RAS mm."""

    shape: tuple[int, ...]
    affine: np.ndarray

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def spacing(self) -> np.ndarray:
        """(3,) node spacing along each grid axis, mm."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def points(self) -> np.ndarray:
        """(X*Y*Z, 3) RAS node positions, C order (the last index, k, fastest)."""
        ijk = np.stack(np.meshgrid(*(np.arange(n) for n in self.shape), indexing="ij"), -1)
        return apply_matrix(self.affine, ijk.reshape(-1, 3).astype(np.float64))


def box_grid(points: np.ndarray, spacing: float, margin: float) -> Grid:
    """An axis-aligned RAS grid every ``spacing`` mm over the box of (N, 3) ``points`` plus
    ``margin`` mm on every side."""
    lo = points.min(0) - margin
    shape = np.ceil((points.max(0) + margin - lo) / spacing).astype(int) + 1
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = lo
    return Grid(tuple(int(n) for n in shape), affine)


def image_grid(
    shape: tuple[int, ...], affine: np.ndarray, spacing: float, margin: float = 0.0
) -> tuple[Grid, np.ndarray, np.ndarray]:
    """A grid over an image of ``shape`` (first 3 used) and voxel -> RAS ``affine``: every
    ``step``-th voxel centre along each axis, step = the largest whole number of voxels not
    above ``spacing`` mm (at least 1), reaching at least ``margin`` mm beyond the image's
    first and last voxel centres.

    Returns:
        (grid, step (3,) int, first (3,) int): node n of the grid is the image's voxel
        ``first + n * step`` (``first`` <= 0: the margin), so a voxel ijk sits at the
        fractional node ``(ijk - first) / step``.
    """
    voxel = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    step = np.maximum(1, np.floor(spacing / voxel + 1e-9)).astype(int)
    extra = np.ceil(margin / (voxel * step) - 1e-9).astype(int)
    first = -extra * step
    n = np.asarray(shape[:3], dtype=int)
    nodes = np.ceil((n - 1) / step).astype(int) + 1 + 2 * extra
    grid_affine = np.array(affine, dtype=np.float64)
    grid_affine[:3, 3] = apply_matrix(grid_affine, first[None].astype(np.float64))[0]
    grid_affine[:3, :3] = grid_affine[:3, :3] * step
    return Grid(tuple(int(v) for v in nodes), grid_affine), step, first
