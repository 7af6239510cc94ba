"""Morton (Z-order) curve of 3-D points: the order the compiled searches run fastest on.

Points sorted along the curve lie near their neighbours in memory: the solver's voxel
hierarchy (:mod:`otreg.ot.hierarchy`) cuts the sorted cloud into runs, and the compiled
kernels' branch and bound (:mod:`otreg.native.kernels`) visits nearby rows and columns together.
"""

from __future__ import annotations

import torch

BITS = 10  # 2**10 voxels per axis at the finest level: far below any blur we solve at


def _spread_bits(v: torch.Tensor) -> torch.Tensor:
    """Insert two zero bits between the low 10 bits of each int64 (Morton interleaving)."""
    v = (v | (v << 16)) & 0x030000FF
    v = (v | (v << 8)) & 0x0300F00F
    v = (v | (v << 4)) & 0x030C30C3
    return (v | (v << 2)) & 0x09249249


def morton_codes(points: torch.Tensor, origin: torch.Tensor, side: float) -> torch.Tensor:
    """(N,) int64 Morton (Z-order) codes of the first three coordinates of (N, D) ``points`` in
    the cube (origin, side), 2**BITS cells per axis."""
    cells = ((points[:, :3] - origin) * (2**BITS / side)).long().clamp_(0, 2**BITS - 1)
    return (
        _spread_bits(cells[:, 0])
        | (_spread_bits(cells[:, 1]) << 1)
        | (_spread_bits(cells[:, 2]) << 2)
    )


def curve_order(points: torch.Tensor) -> torch.Tensor:
    """The permutation that sorts (N, D) ``points`` along a Morton curve over their bounding
    cube: nearby points end up nearby (what the compiled searches run fastest on)."""
    lo = points[:, :3].min(0).values
    side = float((points[:, :3].max(0).values - lo).max()) * 1.001 + 1e-9
    return torch.argsort(morton_codes(points, lo, side))
