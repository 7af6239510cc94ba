"""Diffeomorphic displacement fields: the exponential of a stationary velocity field (SVF).

A velocity v is sampled on a regular, axis-aligned grid (world RAS, mm). ``exp(v)``, the map
that flows every point along v for unit time, is computed on the same grid by scaling and
squaring: phi_0 = id + v / 2^n, then n times phi <- phi o phi (trilinear interpolation of the
node displacements). A smooth v gives a fold-free map, and ``exp(-v)`` is its inverse.

The interpolation runs in otreg's compiled kernels (:func:`otreg.native.kernels.trilinear`,
and :func:`~otreg.native.kernels.squaring_step` for a whole squaring in one pass) when the
extension is usable, otherwise in ``torch.nn.functional.grid_sample`` with
``align_corners=True``: the same values (to rounding), the compiled ones without a tensor
temporary per step (benchmarks/bench_svf.py).

Between the nodes fields are trilinear; outside the grid they take the value of the nearest
border node (``padding_mode="border"``): far from the data the map is a translation, as the
kernel fields of :mod:`otreg.transforms.field` repeat the nearest matches there.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from .base import DisplacementField

#: the first scaling step moves no node by more than this fraction of the grid spacing
MAX_STEP_FRACTION = 0.5
#: at least this many squarings: the first-order step id + v / 2^n errs by ~|v| |grad v| / 2^(n+1)
#: (a linear v of 16 mm: 0.037 mm at n = 5, 0.019 mm at n = 6), and squarings are cheap
MIN_SQUARINGS = 6
#: :func:`velocity_for` keeps det D exp(v) at least this at every node: a margin for the
#: trilinear interpolation between nodes, where the determinant can dip below its node values
MIN_NODE_DET = 0.2


class SVFField(DisplacementField):
    """z -> z + u(z), u the displacement of exp(v) for a velocity v on a regular grid.

    Args:
        velocity: (X, Y, Z, 3) velocity at the grid nodes, mm (displacement per unit time),
            world RAS. Stored as float32 (so a reloaded field equals the computed one).
        origin: (3,) RAS position of node (0, 0, 0), mm.
        spacing: distance between nodes along each axis, mm.
        extra: optional (X, Y, Z, k) channels sampled (trilinearly) at z and returned after
            the displacement (otreg puts the match confidence there).
    """

    kind = "svf"
    invertible = True

    def __init__(
        self,
        velocity: np.ndarray,
        origin: np.ndarray,
        spacing: float,
        extra: np.ndarray | None = None,
    ):
        self.velocity = np.asarray(velocity, dtype=np.float32)
        if (
            self.velocity.ndim != 4
            or self.velocity.shape[3] != 3
            or min(self.velocity.shape[:3]) < 2
        ):
            raise ValueError(
                f"velocity must be (X, Y, Z, 3) with X, Y, Z >= 2, got {self.velocity.shape}"
            )
        self.origin = np.asarray(origin, dtype=np.float64).reshape(3)
        self.spacing = float(spacing)
        shape = self.velocity.shape[:3]
        self.extra = (
            np.zeros((*shape, 0), np.float32)
            if extra is None
            else np.asarray(extra, dtype=np.float32).reshape(*shape, -1)
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.velocity.shape[:3])

    @property
    def squarings(self) -> int:
        """n: the smallest with max|v| / 2^n < MAX_STEP_FRACTION * spacing, at least MIN_SQUARINGS."""
        return squarings_for(self.velocity, self.spacing)

    @classmethod
    def fitted(
        cls, displacement: np.ndarray, origin: np.ndarray, spacing: float, extra=None
    ) -> SVFField:
        """The field of :func:`velocity_for` ``(displacement, spacing)`` (see ``__init__``),
        with the exponential the fit computed kept (not computed again at first use)."""
        velocity, reached = velocity_and_exponential(displacement, spacing)
        field = cls(velocity, origin, spacing, extra)
        field.__dict__["node_displacement"] = reached  # the cached_property's value
        return field

    @cached_property
    def node_displacement(self) -> np.ndarray:
        """(X, Y, Z, 3) displacement of exp(v) at the nodes, mm (float64)."""
        return exp_velocity(self.velocity, self.spacing)

    @cached_property
    def node_inverse_displacement(self) -> np.ndarray:
        """(X, Y, Z, 3) displacement of exp(-v) = exp(v)^-1 at the nodes, mm (float64)."""
        return exp_velocity(-self.velocity, self.spacing)

    @cached_property
    def _channels(self) -> np.ndarray:
        """(X, Y, Z, 3 + k): the displacement and the extra channels, sampled together."""
        return np.concatenate([self.node_displacement, self.extra.astype(np.float64)], axis=3)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """(N, 3 + k): u(z) (mm) and the extra channels at (N, 3) ``points`` (mm, RAS)."""
        return sample_grid(self._channels, self._index(points))

    def inverse(self, points: np.ndarray) -> np.ndarray:
        """exp(-v)(y) = y + u_inv(y) at (N, 3) target-side ``points``; returns (N, 3) mm RAS."""
        points = np.asarray(points, dtype=np.float64)
        return points + sample_grid(self.node_inverse_displacement, self._index(points))

    @property
    def jacobian_step(self) -> float:
        return self.spacing / 50

    def _index(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.origin) / self.spacing

    # ------------------------------------------------------------------ files
    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {
            f"{prefix}kind": np.array(self.kind),
            f"{prefix}velocity": self.velocity,
            f"{prefix}origin": self.origin,
            f"{prefix}spacing": np.array(self.spacing),
            f"{prefix}extra": self.extra,
        }

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> SVFField:
        return cls(
            arrays[f"{prefix}velocity"],
            arrays[f"{prefix}origin"],
            float(arrays[f"{prefix}spacing"]),
            arrays[f"{prefix}extra"],
        )


def squarings_for(velocity: np.ndarray, spacing: float) -> int:
    """Number of squarings n for a (..., 3) velocity (mm) on a grid of ``spacing`` mm."""
    vmax = float(np.linalg.norm(np.asarray(velocity, dtype=np.float64), axis=-1).max(initial=0.0))
    n = 0 if vmax == 0 else max(0, math.floor(math.log2(vmax / (MAX_STEP_FRACTION * spacing))) + 1)
    return max(n, MIN_SQUARINGS)


def exp_velocity(velocity: np.ndarray, spacing: float, squarings: int | None = None) -> np.ndarray:
    """Displacement (X, Y, Z, 3), mm (float64), of exp(v) for a velocity (X, Y, Z, 3) in mm on
    the grid.

    Scaling and squaring: u <- v / 2^n, then n times u(x) <- u(x) + u(x + u(x)), in float32
    (the velocity is stored so; on a copd1-sized grid, 3e-6 mm from float64 sums and 1.6x
    faster: benchmarks/README.md). ``squarings`` defaults to :func:`squarings_for`.
    """
    n = squarings_for(velocity, spacing) if squarings is None else int(squarings)
    scaled = np.ascontiguousarray(np.asarray(velocity, dtype=np.float64) / 2.0**n, np.float32)
    compiled = _compiled()
    if compiled is not None:
        for _ in range(n):
            scaled = compiled.squaring_step(scaled, spacing)
        return scaled.astype(np.float64)

    import torch

    u = torch.from_numpy(scaled)
    shape = u.shape[:3]
    nodes = torch.stack(
        torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in shape), indexing="ij"), -1
    )
    for _ in range(n):
        u = u + _sample(u, nodes + u / spacing)
    return u.double().numpy()


def velocity_for(
    displacement: np.ndarray, spacing: float, iterations: int = 4, min_det: float = MIN_NODE_DET
) -> np.ndarray:
    """A velocity v (X, Y, Z, 3), mm, whose exponential has about the given (X, Y, Z, 3)
    displacement u.

    Fixed-point iterations v <- v + (u - disp(exp(v))) from v = u: an approximate log map
    whose error falls with each iteration (benchmarks/README.md, design measurements). Where u
    itself folds or nearly does, no velocity reproduces it: an iteration is kept only while
    det D exp(v) stays >= ``min_det`` at every node, so the map stays safely fold-free.
    """
    return velocity_and_exponential(displacement, spacing, iterations, min_det)[0]


def velocity_and_exponential(
    displacement: np.ndarray, spacing: float, iterations: int = 4, min_det: float = MIN_NODE_DET
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`velocity_for`'s velocity (float32, as :class:`SVFField` stores it) and the
    displacement of its exponential (:func:`exp_velocity`), which the iterations computed."""
    target = np.asarray(displacement, dtype=np.float64)
    velocity = target.astype(np.float32)
    reached = exp_velocity(velocity, spacing)
    for _ in range(iterations):
        candidate = (velocity + (target - reached)).astype(np.float32)
        candidate_reached = exp_velocity(candidate, spacing)
        if node_determinants(candidate_reached, spacing).min() < min_det:
            break
        velocity, reached = candidate, candidate_reached
    return velocity, reached


def node_determinants(displacement: np.ndarray, spacing: float) -> np.ndarray:
    """(X, Y, Z) det(I + grad u) of a (X, Y, Z, 3) displacement (mm) on the grid, by finite
    differences (central inside, one-sided at the border)."""
    # j[r][c] = d phi_r / d x_c; the 3 x 3 determinant written out (np.linalg.det's LU per
    # node is several times slower on large grids)
    j = [list(np.gradient(displacement[..., r], spacing)) for r in range(3)]
    for r in range(3):
        j[r][r] = j[r][r] + 1.0
    return (
        j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
        - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
        + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0])
    )


def sample_grid(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Trilinear values (N, C) of a (X, Y, Z, C) grid at (N, 3) fractional node indices.

    Outside the grid: the value at the nearest border point (float64 throughout).
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    index = np.asarray(index, dtype=np.float64)
    compiled = _compiled()
    if compiled is not None:
        flat = np.ascontiguousarray(index.reshape(-1, 3))
        return compiled.trilinear(values, flat).reshape(*index.shape[:-1], values.shape[3])

    import torch

    return _sample(torch.as_tensor(values), torch.as_tensor(index)).numpy()


def _compiled():
    """:mod:`otreg.native.kernels` when the compiled extension is usable, else None (then the
    samplers use torch's grid_sample, as with ``OTREG_NATIVE=0``)."""
    from .. import native

    if not native.available():
        return None
    from ..native import kernels

    return kernels


def _sample(values, index):
    """torch: (X, Y, Z, C) grid, (..., 3) fractional indices -> (..., C)."""
    import torch.nn.functional as F

    shape = values.shape[:3]
    lead = index.shape[:-1]
    sizes = index.new_tensor([s - 1 for s in shape])
    # grid_sample's last coordinate indexes the first volume axis: reverse (i, j, k) -> (k, j, i)
    normalised = (2 * index.reshape(-1, 3) / sizes - 1).flip(-1)
    volume = values.permute(3, 0, 1, 2)[None]  # (1, C, X, Y, Z)
    out = F.grid_sample(
        volume,
        normalised.reshape(1, -1, 1, 1, 3),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )
    return out.reshape(values.shape[3], -1).T.reshape(*lead, values.shape[3])
