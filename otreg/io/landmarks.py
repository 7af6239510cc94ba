"""Landmark files: ordered (N, 3) points in mm, row i of one file matching row i of another.

Two formats:

- ``"mm"``: x y z rows in mm (any point list that :mod:`otreg.io.pointlists` reads, a
  mesh / point-cloud file that :mod:`otreg.io.meshes` reads, or 3D Slicer markups ``.fcsv`` /
  ``.mrk.json`` (:mod:`otreg.io.markups`); LPS files converted to RAS).
- ``"dirlab"``: the DIR-LAB 4DCT files: whitespace-separated 1-based voxel indices (x y z),
  often with ``\\r\\n`` line endings. ``mm = (index - 1) * spacing``: the frame of the DIR-LAB
  point clouds (voxel-aligned axes, origin at the first voxel's centre), used as-is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InputError

LANDMARK_FORMATS = ("mm", "dirlab")


def read_landmarks(
    path: str | Path,
    format: Literal["mm", "dirlab"] = "mm",
    spacing: Sequence[float] | None = None,
    *,
    mesh_frame: str = "lps",
) -> np.ndarray:
    """Read landmarks as an (N, 3) float64 array in mm (RAS+ for "mm" files), in file order.

    Args:
        path: the landmark file.
        format: "mm" or "dirlab" (see the module docstring).
        spacing: (sx, sy, sz) voxel size in mm; required for "dirlab", ignored otherwise.
        mesh_frame: frame of a mesh file without a SPACE= tag ("lps" or "ras").

    Raises:
        InputError: missing file, unknown format, missing/bad spacing, unreadable rows, no rows,
            non-finite values, DIR-LAB indices below 1.
    """
    from . import markups, meshes, pointlists

    path = Path(path)
    if format not in LANDMARK_FORMATS:
        known = ", ".join(LANDMARK_FORMATS)
        raise InputError(path, f"unknown landmark format {format!r} (formats: {known})")
    from ._precheck import check_regular_file

    check_regular_file(path)
    if format == "dirlab":
        step = _check_spacing(path, spacing)
        index = pointlists.read_table(path)[:, :3]
        _check_finite(path, index)
        if (index < 1).any():
            row = int(np.flatnonzero((index < 1).any(axis=1))[0])
            raise InputError(
                path,
                f"row {row + 1} has an index below 1; DIR-LAB indices are 1-based voxel indices",
            )
        return (index - 1.0) * step
    suffix = path.suffix.lower()
    if markups.is_markups(path):
        return markups.read_markups(path)
    if suffix in meshes.MESH_SUFFIXES:
        points = meshes.read_mesh_points(path, default_space=mesh_frame.upper())
    else:
        points = pointlists.read_points(path)
    _check_finite(path, points)
    return points


def _check_spacing(path: Path, spacing: Sequence[float] | None) -> np.ndarray:
    if spacing is None:
        raise InputError(
            path,
            "DIR-LAB landmarks are voxel indices: give their voxel spacing (--spacing SX SY SZ, mm)",
        )
    try:
        step = np.asarray(spacing, dtype=np.float64).reshape(3)
    except (TypeError, ValueError):
        raise InputError(
            path, f"spacing must be three numbers (sx, sy, sz) in mm, got {spacing!r}"
        ) from None
    if not (np.isfinite(step).all() and (step > 0).all()):
        raise InputError(path, f"spacing must be positive, got {tuple(step.tolist())}")
    return step


def _check_finite(path: Path, points: np.ndarray) -> None:
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise InputError(path, f"row {int(np.flatnonzero(bad)[0]) + 1} has NaN or Inf values")
