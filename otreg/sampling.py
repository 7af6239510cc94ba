"""Down-sampling of weighted point clouds by voxel-grid clustering (mass-preserving).

Each occupied cubic cell of a grid becomes one point: the weighted mean of its points, weighing
the sum of their weights. The total mass and the centre of mass are therefore kept exactly (up to
rounding), and the measure moves by at most one cell diagonal: the coarse cloud is a good
stand-in for the fine one in optimal transport. The cell size is searched so that the number of
occupied cells is at most ``n`` and as close to it as the grid allows.
"""

from __future__ import annotations

import logging

import numpy as np

from .config import MIN_POINTS, check_point_count
from .errors import InputError
from .pointcloud import PointCloud

log = logging.getLogger(__name__)

# Stop the cell-size search when the count is within this fraction below n ...
_COUNT_TOL = 1e-3
# ... or when the bracket on the cell size is this narrow (relative), or after this many counts.
_SIZE_TOL = 1e-6
_MAX_EVALUATIONS = 40
# Per-axis cell counts stay below 2**20 so that a cell's (i, j, k) packs into one int64 key.
_MAX_CELLS_PER_AXIS = 2**20


class _Grid:
    """Cell keys of a fixed point set for any cell size, with a fixed sub-cell offset."""

    def __init__(self, points: np.ndarray, offset: np.ndarray, origin: np.ndarray | None = None):
        self.origin = points.min(axis=0) if origin is None else np.asarray(origin, np.float64)
        self.q = points - self.origin  # (N, 3) >= 0, mm
        self.extent = float(self.q.max()) if len(points) else 0.0
        self.offset = offset  # (3,) in [0, 1): shift of the grid, in cells

    def min_size(self) -> float:
        """Smallest cell size whose keys fit in int64."""
        return self.extent / (_MAX_CELLS_PER_AXIS - 2) if self.extent > 0 else 1.0

    def keys(self, size: float) -> np.ndarray:
        """(N,) int64 key of each point's cell for cubic cells of ``size`` mm."""
        if not size >= self.min_size():
            raise ValueError(
                f"cell size {size:g} mm is too small for a cloud {self.extent:g} mm wide"
            )
        scaled = self.q * (1.0 / size)
        scaled += self.offset
        ijk = scaled.astype(np.int64)  # truncation == floor: the values are >= 0
        dims = ijk.max(axis=0) + 1
        keys = ijk[:, 0] * dims[1]
        keys += ijk[:, 1]
        keys *= dims[2]
        keys += ijk[:, 2]
        return keys

    def count(self, size: float) -> int:
        """Number of occupied cells for cells of ``size`` mm."""
        keys = self.keys(size)
        keys.sort()
        return int(1 + np.count_nonzero(keys[1:] != keys[:-1])) if len(keys) else 0


def _search_size(grid: _Grid, n: int) -> float:
    """A cell size whose occupied-cell count is <= n and as close to n as found.

    The count falls roughly like size**-d (d = 1 for curves, 2 for surfaces, 3 for volumes), so
    the search interpolates in log-log space inside a bracket [too small, small enough], falling
    back to bisection of log(size) when interpolation stalls. Deterministic for a given grid.
    """
    if grid.extent == 0:
        return 1.0
    evaluations = 0

    def count(size: float) -> int:
        nonlocal evaluations
        evaluations += 1
        return grid.count(size)

    # hi, the first size tried, always qualifies: best_size is set before it is returned
    best_size, best_count = 0.0, -1

    def consider(size: float, c: int) -> None:
        nonlocal best_size, best_count
        if c <= n and c > best_count:
            best_size, best_count = size, c

    # Upper end: cells large enough to hold everything in <= n cells.
    hi = grid.extent
    c_hi = count(hi)
    while c_hi > n:  # only for tiny n (<= 8): a few doublings
        hi *= 2.0
        c_hi = count(hi)
    consider(hi, c_hi)

    # Lower end: shrink using the current slope estimate until the count exceeds n.
    lo: float | None = None
    c_lo = 0
    slope = 2.0  # a surface; corrected from the first measurements
    size, c = hi, c_hi
    floor = grid.min_size()
    while lo is None:
        guess = size * (max(c, 1) / (n * 1.05)) ** (1.0 / slope)
        new = max(min(guess, size / 1.5), floor)
        c_new = count(new)
        if c_new > n:
            lo, c_lo = new, c_new
        else:
            consider(new, c_new)
            hi, c_hi = new, c_new
            if new <= floor:
                return best_size  # at most n distinct cells even at the finest grid
            if c_new > c:
                slope = float(np.clip(np.log(c_new / max(c, 1)) / np.log(size / new), 0.5, 3.0))
            size, c = new, c_new

    # Refine inside [lo, hi]: count(lo) > n >= count(hi).
    bisect_next = False
    while evaluations < _MAX_EVALUATIONS:
        if best_count >= n * (1 - _COUNT_TOL) or hi / lo < 1 + _SIZE_TOL:
            break
        log_lo, log_hi = np.log(lo), np.log(hi)
        if bisect_next or c_hi <= 0:
            t = 0.5
        else:
            # log-log interpolation of count(size) = n between the two ends
            t = np.log(c_lo / n) / np.log(c_lo / max(c_hi, 1))
            t = float(np.clip(t, 0.05, 0.95))
        mid = float(np.exp(log_lo + t * (log_hi - log_lo)))
        c_mid = count(mid)
        if c_mid > n:
            lo, c_lo = mid, c_mid
        else:
            consider(mid, c_mid)
            hi, c_hi = mid, c_mid
        # An interpolation step that hit a clip bound (the count curve is far from a power law
        # there) is followed by a bisection step, so the search cannot crawl along one end.
        bisect_next = not bisect_next and t in (0.05, 0.95)
    log.debug("cell size search: %d counts, %d cells for n=%d", evaluations, best_count, n)
    return best_size


def _weighted_sums(inverse: np.ndarray, m: int, w: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-cluster sums of ``w * values`` for (N,) or (N, k) values -> (m,) or (m, k)."""
    if values.ndim == 1:
        return np.bincount(inverse, weights=w * values, minlength=m)
    flat = values.reshape(len(values), -1)
    sums = np.stack(
        [np.bincount(inverse, weights=w * flat[:, j], minlength=m) for j in range(flat.shape[1])],
        axis=1,
    )
    return sums.reshape((m, *values.shape[1:]))


def cluster(
    cloud: PointCloud,
    size: float,
    offset: np.ndarray | None = None,
    *,
    origin: np.ndarray | None = None,
    min_points: int = 4,
) -> PointCloud:
    """Merge the points of each occupied cell of a grid of ``size`` mm into one weighted point.

    Args:
        cloud: the cloud to coarsen.
        size: cell edge, mm.
        offset: (3,) grid shift in cells, in [0, 1); default none.
        origin: (3,) mm, a corner of the grid's lattice (default: the cloud's smallest
            coordinates); clouds clustered with one origin, size and offset share their cells.
        min_points: fewest clusters accepted (a PointCloud needs 4); InputError below.

    Returns:
        One point per cell with positive total weight: position and features are the weighted
        means of the cell's points, weight the sum. Cells whose points all weigh 0 are dropped.
    """
    if origin is not None:
        # the same lattice, its corner moved by whole cells below the cloud (keys need q >= 0)
        below = np.ceil(np.maximum(np.asarray(origin) - cloud.points.min(axis=0), 0) / size)
        origin = np.asarray(origin, dtype=np.float64) - (below + 1) * size
    grid = _Grid(
        cloud.points,
        np.zeros(3) if offset is None else np.asarray(offset, dtype=np.float64),
        origin,
    )
    keys = grid.keys(size)
    _, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.ravel()
    m = int(inverse.max()) + 1
    w = cloud.weights
    mass = np.bincount(inverse, weights=w, minlength=m)
    keep = mass > 0
    if not keep.all():
        log.debug(
            "%s: %d of %d cells hold only zero-weight points and are dropped",
            cloud.source,
            int((~keep).sum()),
            m,
        )
    if int(keep.sum()) < min_points:
        raise InputError(
            cloud.source,
            f"cells of {size:.3g} mm leave {int(keep.sum())} cluster(s) with mass, "
            f"fewer than {min_points}: keep more points (input.points)",
        )
    mass_kept = mass[keep]
    points = _weighted_sums(inverse, m, w, cloud.points)[keep] / mass_kept[:, None]
    features = {}
    for name, values in cloud.features.items():
        values = np.asarray(values, dtype=np.float64)
        sums = _weighted_sums(inverse, m, w, values)[keep]
        features[name] = sums / mass_kept.reshape((-1,) + (1,) * (values.ndim - 1))
    meta = {
        **cloud.meta,
        "cluster_size_mm": float(size),
        "cluster_origin_mm": grid.origin.tolist(),
        "cluster_offset": grid.offset.tolist(),
    }
    return PointCloud(points, mass_kept, features, cloud.source, meta)


def downsample(cloud: PointCloud, n: int, *, seed: int = 0) -> PointCloud:
    """Reduce ``cloud`` to at most ``n`` points by weighted voxel-grid clustering.

    Args:
        cloud: points (N, 3) mm, weights (N,), features (N, ...).
        n: the largest number of points wanted; 0 means keep all. At least 4 otherwise.
        seed: chooses the random sub-cell offset of the grid; the result is deterministic for a
            given seed.

    Returns:
        ``cloud`` itself if ``len(cloud) <= n`` or ``n == 0``. Otherwise a new cloud of at most
        ``n`` points (as close to ``n`` as the grid allows), with the same total weight and
        centre of mass, features averaged with the weights, and meta["downsampled_from"] = N,
        meta["cluster_size_mm"] = the cell edge used.

    Points of weight 0 carry no mass: in a cell with positive mass they take no part in the
    weighted means, and a cell holding only such points would be a point of weight 0, so the
    cell search counts (and the result keeps) only cells with positive mass. How many
    zero-weight points this leaves out is logged at debug level.

    Raises:
        ValueError: ``n`` is negative or 1 to 3.
        InputError: the grid cannot make 4 to ``n`` cells (only for tiny ``n``: the number of
            occupied cells jumps as the cell size changes).
    """
    check_point_count(n)
    positive = cloud.weights > 0
    if positive.sum() < MIN_POINTS:
        raise InputError(
            cloud.source,
            f"only {int(positive.sum())} of its {len(cloud)} points carry weight (> 0); "
            f"registration needs at least {MIN_POINTS} (isolated vertices of a surface weigh 0)",
        )
    if not positive.all():
        # even when no down-sampling is needed: a point of weight 0 makes the OT potentials -inf
        log.debug(
            "%s: %d zero-weight point(s) carry no mass and are left out",
            cloud.source,
            int((~positive).sum()),
        )
        cloud_pos = cloud.subset(positive)
    else:
        cloud_pos = cloud
    if n == 0 or len(cloud) <= n:
        if cloud_pos is not cloud:
            cloud_pos.meta = {**cloud_pos.meta, "downsampled_from": len(cloud)}
        return cloud_pos
    if len(cloud_pos) <= n:
        out = cloud_pos
        out.meta = {**out.meta, "downsampled_from": len(cloud)}
        return out
    offset = np.random.default_rng(seed).random(3)
    size = _search_size(_Grid(cloud_pos.points, offset), n)
    out = cluster(cloud_pos, size, offset, min_points=MIN_POINTS)
    out.meta["downsampled_from"] = len(cloud)
    log.debug("%s: %d -> %d points (cells of %.3g mm)", cloud.source, len(cloud), len(out), size)
    return out


def downsample_onto(
    cloud: PointCloud, reference: PointCloud, matrix: np.ndarray, n: int, *, seed: int = 0
) -> PointCloud:
    """``cloud`` clustered on the cells that made ``reference`` (a result of :func:`downsample`),
    seen through ``matrix``, then mapped back: its points stay in ``cloud``'s frame.

    Cluster means commute with affine maps, so once ``matrix`` (4, 4, ``cloud``'s frame ->
    ``reference``'s) aligns the two, both are cut by the same cells and clustering adds no
    offset between them: the rigid fit and the matches then see the anatomy, not the grids.
    When ``reference`` was not clustered, or its cells would cut ``cloud`` into more than
    twice ``n`` points, this is ``downsample(cloud, n, seed=seed)``.
    """
    from .transforms.rigid import apply_matrix

    if "cluster_size_mm" not in reference.meta or n == 0 or len(cloud) <= n:
        return downsample(cloud, n, seed=seed)
    moved = cloud.with_points(apply_matrix(matrix, cloud.points))
    out = cluster(
        moved,
        reference.meta["cluster_size_mm"],
        np.asarray(reference.meta["cluster_offset"]),
        origin=np.asarray(reference.meta["cluster_origin_mm"]),
        min_points=MIN_POINTS,
    )
    if len(out) > 2 * n:
        return downsample(cloud, n, seed=seed)
    out = out.with_points(apply_matrix(np.linalg.inv(matrix), out.points))
    out.meta["downsampled_from"] = len(cloud)
    return out
