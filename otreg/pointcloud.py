"""The weighted point cloud (a discrete measure) that every stage works on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError


@dataclass
class PointCloud:
    """A weighted point cloud in world RAS millimetres.

    Attributes:
        points: (N, 3) float64, mm, world RAS+ (nibabel's frame: +x towards the patient's
            Right, +y Anterior, +z Superior). ITK/DICOM LPS+ is diag(-1, -1, 1) times RAS+;
            files are converted at I/O only (``otreg.io.frames``).
        weights: (N,) float64, non-negative, not all zero. Their sum is the cloud's mass: mm^2 for
            area-weighted surfaces, mm^3 for voxel volumes, N for uniform weights.
        features: per-point arrays by name, each (N,) or (N, k) (e.g. ``radius`` in mm).
        source: where the cloud came from (a path, or a description), used in messages.
        meta: provenance (reader, frame the file was stored in, selected labels ...).
    """

    points: np.ndarray
    weights: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "<memory>"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.ascontiguousarray(self.points, dtype=np.float64)
        self.weights = np.ascontiguousarray(self.weights, dtype=np.float64)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self, min_points: int = 4) -> None:
        """Raise :class:`InputError` naming ``source`` if the cloud cannot be registered."""
        p, w = self.points, self.weights
        if p.ndim != 2 or p.shape[1] != 3:
            raise InputError(self.source, f"points must have shape (N, 3), got {p.shape}")
        if len(p) < min_points:
            raise InputError(
                self.source, f"has {len(p)} point(s); at least {min_points} are needed"
            )
        bad = ~np.isfinite(p).all(axis=1)
        if bad.any():
            raise InputError(
                self.source,
                f"{int(bad.sum())} point(s) have NaN or Inf coordinates "
                f"(first at row {int(np.flatnonzero(bad)[0])})",
            )
        if w.shape != (len(p),):
            raise InputError(self.source, f"weights must have shape ({len(p)},), got {w.shape}")
        if not np.isfinite(w).all():
            raise InputError(self.source, "weights contain NaN or Inf")
        if (w < 0).any():
            raise InputError(
                self.source, f"{int((w < 0).sum())} weight(s) are negative; weights must be >= 0"
            )
        if not w.sum() > 0:
            raise InputError(self.source, "all weights are zero: the cloud has no mass")
        for name, values in self.features.items():
            if len(values) != len(p):
                raise InputError(
                    self.source,
                    f"feature {name!r} has {len(values)} rows for {len(p)} points",
                )

    # ------------------------------------------------------------- properties
    def __len__(self) -> int:
        return len(self.points)

    @property
    def mass(self) -> float:
        """Total weight (sum of ``weights``)."""
        return float(self.weights.sum())

    @property
    def center_of_mass(self) -> np.ndarray:
        """(3,) weighted mean of the points, mm."""
        return (self.weights @ self.points) / self.weights.sum()

    @property
    def diameter(self) -> float:
        """Diagonal of the axis-aligned bounding box, mm."""
        return float(np.linalg.norm(self.points.max(0) - self.points.min(0)))

    def subset(self, index: np.ndarray) -> PointCloud:
        """The cloud restricted to ``index`` (bool mask or integer indices), weights kept."""
        return PointCloud(
            self.points[index],
            self.weights[index],
            {k: v[index] for k, v in self.features.items()},
            self.source,
            dict(self.meta),
        )

    def with_points(self, points: np.ndarray) -> PointCloud:
        """A copy with new (N, 3) positions and everything else unchanged."""
        return PointCloud(points, self.weights, dict(self.features), self.source, dict(self.meta))

    def __repr__(self) -> str:
        feats = ", ".join(self.features) or "none"
        return (
            f"PointCloud({len(self)} points, mass={self.mass:.4g}, "
            f"diameter={self.diameter:.1f} mm, features: {feats}, source={self.source!r})"
        )
