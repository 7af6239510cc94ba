"""Wide kernel averages at many points through a grid: splat, blur, interpolate.

A Nadaraya-Watson average of width sigma at N points over K controls costs N times the
controls within about 5 sigma of each point (:mod:`otreg.native.gaussian_average`): nearly
N x K at the first rounds' widths (20 mm over a lung). On a grid of spacing h = sigma /
``NODES_PER_SIGMA`` it costs a few dense products per axis instead:

1. splat: each control's weight w_k and weighted value w_k v_k go to the 8 nodes around it
   (trilinear shares: the total and the centroid of the mass are kept);
2. blur: a Gaussian along each axis (exact, dense), of variance sigma^2 - h^2 / 3, since
   splatting and interpolating each widen the kernel by a tent of variance h^2 / 6;
3. interpolate both sums trilinearly at the points and divide.

The result differs from the exact average by O(h^2): on the copd1 vessel pair's first rounds
(14,530 points, sigma 20 and 15 mm) at most 0.014 mm, 0.0015 mm on average, for about 15x and 3x
less time (benchmarks/README.md, design measurements). otreg uses it for the fields of the
intermediate rounds only (they move the points towards the next round's matching; the
transform itself is exact), where it costs less by the estimate of :func:`pays`.
"""

from __future__ import annotations

import math

import numpy as np

#: grid nodes per kernel width: the error falls as the square of the spacing
NODES_PER_SIGMA = 6
#: the truncated exact average reaches this many widths around each point
_REACH_SIGMAS = 4.9
#: the grid when its dense axis products (floating-point operations) are fewer than this many
#: times the kernel entries of the exact average (measured: an entry costs about as much time
#: as 100 of those operations; a margin left)
_FLOPS_PER_ENTRY = 30
#: and never more nodes than this: 8 bytes per channel and node, about three copies at once
#: (0.8 GB with the confidence channel; copd1's grid at sigma 15 mm: 1.4M nodes, at 7 mm:
#: 6.5M, where clouds of 60,000 points and more average faster through it)
_MAX_NODES = 8_000_000


def _grid(controls: np.ndarray, points: np.ndarray, sigma: float):
    """(origin (3,), spacing, shape (3,)) of a grid over both clouds plus one node."""
    h = sigma / NODES_PER_SIGMA
    lo = np.minimum(controls.min(0), points.min(0)) - h
    hi = np.maximum(controls.max(0), points.max(0)) + h
    shape = np.ceil((hi - lo) / h).astype(np.int64) + 2
    return lo, h, shape


def pays(controls: np.ndarray, points: np.ndarray, sigma: float, channels: int) -> bool:
    """Whether :func:`gridded_average` should cost less than the exact average at ``points``
    (N, 3) over ``controls`` (K, 3), mm, for ``channels`` values per control."""
    if not len(controls) or not len(points):
        return False
    _, _, shape = _grid(controls, points, sigma)
    nodes = float(np.prod(shape.astype(np.float64)))
    if nodes > _MAX_NODES:
        return False
    extent = np.maximum(controls.max(0) - controls.min(0), sigma)
    ball = 4 / 3 * math.pi * (_REACH_SIGMAS * sigma) ** 3
    near = len(controls) * min(1.0, ball / float(np.prod(extent)))
    flops = nodes * float(shape.sum()) * (channels + 1)
    return flops < _FLOPS_PER_ENTRY * len(points) * near


def gridded_average(
    controls: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    sigma: float,
    points: np.ndarray,
) -> np.ndarray:
    """(N, d) Gaussian-weighted average (width ``sigma`` mm) of the (K, d) ``values`` with
    (K,) ``weights`` >= 0 at the (K, 3) ``controls``, evaluated at (N, 3) ``points`` (mm, one
    frame), through a grid (see the module docstring). Rows that the grid leaves without
    weight (every control too far) are evaluated exactly."""
    import torch

    from .field import KernelField
    from .svf import sample_grid

    controls = np.asarray(controls, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64).reshape(len(controls), -1)
    weights = np.asarray(weights, dtype=np.float64)
    d = values.shape[1]
    lo, h, shape = _grid(controls, points, sigma)
    channels = np.column_stack([weights[:, None] * values, weights])  # (K, d + 1)
    index = (controls - lo) / h
    base = np.floor(index).astype(np.int64)
    frac = index - base
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    size = int(np.prod(shape))
    grid = np.zeros((size, d + 1))
    for corner in range(8):
        offset = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        share = np.prod(np.where(offset == 1, frac, 1 - frac), axis=1)
        flat = (base + offset) @ strides
        for c in range(d + 1):
            grid[:, c] += np.bincount(flat, share * channels[:, c], size)
    blurred = torch.from_numpy(grid.reshape(*shape, d + 1))
    width = math.sqrt(sigma * sigma - h * h / 3) / h  # in nodes
    for axis, n in enumerate(shape):
        nodes = torch.arange(int(n), dtype=torch.float64)
        blur = torch.exp(-((nodes[:, None] - nodes[None, :]) ** 2) / (2 * width * width))
        blurred = torch.movedim(torch.tensordot(blur, blurred, dims=([1], [axis])), 0, axis)
    sums = sample_grid(blurred.numpy(), (points - lo) / h)
    out = np.empty((len(points), d))
    total = sums[:, -1]
    # sums of positive terms keep their digits; a row far from every control underflows
    good = total > 1e-200 * max(float(weights.max(initial=0.0)), 1e-300)
    out[good] = sums[good, :-1] / total[good, None]
    if not good.all():
        out[~good] = KernelField(controls, values, weights, sigma)(points[~good])
    return out


def field_at(field, points: np.ndarray) -> np.ndarray:
    """``field(points)``, through :func:`gridded_average` for a kernel average where that
    :func:`pays` (any other field: exactly)."""
    from .field import KernelField

    if isinstance(field, KernelField) and pays(
        field.controls, points, field.sigma, field.values.shape[1]
    ):
        return gridded_average(field.controls, field.values, field.weights, field.sigma, points)
    return field(points)
