"""Nested voxel clusters of a weighted cloud, for the multiscale solver.

Points are sorted once along a Morton (Z-order) curve of their first three coordinates. A
voxel of side ``side / 2**k`` then holds a contiguous run of the sorted points, so every level
of the hierarchy is just a list of run boundaries, a cluster's children at any finer level are
a contiguous range of that level's clusters, and no tree is ever stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# the Morton curve is shared with the compiled kernels and the smoothing fields
from ..native.morton import BITS, curve_order, morton_codes

__all__ = ["BITS", "Hierarchy", "Level", "curve_order", "morton_codes"]


@dataclass
class Level:
    """One resolution of a cloud: clusters in Morton order.

    Attributes:
        points: (n, D) weighted centroids, same units and frame as the input.
        weights: (n,) total weight of each cluster.
        start: (n + 1,) int64 offsets: cluster c holds the sorted points start[c]:start[c+1].
        side: voxel side (input units); 0 for the points themselves.
        spread: (n,) weighted mean of |x - centroid|^2 over each cluster's points (input
            units squared, all D columns); None for the points themselves.
    """

    points: torch.Tensor
    weights: torch.Tensor
    start: torch.Tensor
    side: float
    spread: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.weights)

    def children_start(self, finer: Level) -> torch.Tensor:
        """(n + 1,) offsets into ``finer``'s clusters: cluster c of self holds finer's
        clusters children_start[c]:children_start[c+1] (voxels nest, so this is exact)."""
        return torch.searchsorted(finer.start, self.start)


class Hierarchy:
    """All voxel levels of one cloud over a shared cube (origin, side), coarse to fine.

    Args:
        points: (N, D) points, D >= 3 (columns past the third, e.g. scaled features, are
            carried along but do not decide the clusters).
        weights: (N,) weights >= 0.
        origin: (3,) lowest corner of the cube that holds both clouds of a solve.
        side: the cube's side; level k has voxels of side ``side / 2**k``.

    ``order`` is the permutation that sorts the input along the curve: ``points[order]`` are
    the points of :attr:`finest`.
    """

    def __init__(
        self, points: torch.Tensor, weights: torch.Tensor, origin: torch.Tensor, side: float
    ):
        code, self.order = torch.sort(morton_codes(points, origin, side))
        self.side = side
        self.finest = Level(
            points[self.order],
            weights[self.order],
            torch.arange(len(points) + 1, device=points.device),
            0.0,
        )
        self._code = code
        self._levels: dict[int, Level] = {}

    def count(self, k: int) -> int:
        """The number of clusters of :meth:`level` ``k``, without building them."""
        key = self._code >> (3 * (BITS - k))
        return int((key[1:] != key[:-1]).sum()) + 1 if len(key) else 0

    def level(self, k: int) -> Level:
        """Clusters of voxel side ``side / 2**k`` (0 <= k <= BITS), built on first use."""
        if k not in self._levels:
            key = self._code >> (3 * (BITS - k))
            new_run = torch.ones_like(key, dtype=torch.bool)
            new_run[1:] = key[1:] != key[:-1]
            start = torch.cat([new_run.nonzero()[:, 0], key.new_tensor([len(key)])])
            self._levels[k] = _clusters(self.finest, start, self.side / 2**k)
        return self._levels[k]


def _clusters(finest: Level, start: torch.Tensor, side: float) -> Level:
    """Weighted centroids and spreads of the runs ``start`` of the finest points (sums in
    float64, about the runs' first points so that no large squares cancel)."""
    w = finest.weights.double()
    first = finest.points[start[:-1]].double()
    offsets = finest.points.double() - torch.repeat_interleave(first, start.diff(), dim=0)

    def run_sums(values: torch.Tensor) -> torch.Tensor:
        cum = torch.cat([values.new_zeros(1, *values.shape[1:]), values.cumsum(0)])
        return cum[start[1:]] - cum[start[:-1]]

    weights = run_sums(w)
    total = weights.clamp(min=1e-300)
    mean_offset = run_sums(w[:, None] * offsets) / total[:, None]
    spread = (
        run_sums(w * (offsets * offsets).sum(1)) / total - (mean_offset * mean_offset).sum(1)
    ).clamp(min=0)
    # a cluster of zero weight still needs a position: its first point
    points = first + torch.where(weights[:, None] > 0, mean_offset, 0.0)
    dtype = finest.points.dtype
    return Level(points.to(dtype), weights.to(dtype), start, side, spread.to(dtype))
