"""A synthetic lobe-surface pair with a known breathing motion (for tests and benchmarks).

From one point set of a lobe surface (e.g. the LUNA16 surfaces in ``../shared/data``): the
source mesh is rebuilt from the points, the points are moved by :func:`breathing`, and the
target mesh is rebuilt from the moved points at another spacing, so that no vertex of one mesh
has a partner in the other. All in mm, RAS (the files' stored coordinates).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SOURCE_SPACING, TARGET_SPACING = 4.0, 3.5  # mm, surface reconstruction sample spacing


def breathing(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(N, 3) displacement (mm) of a breathing-like motion over the box [lo, hi] (RAS mm): the
    base (low z) descends by up to 20 mm, decaying quadratically to 2 mm at the top, the front
    (high y) moves forward by up to 3 mm and the sides widen by up to 2 mm."""
    x, y, z = ((points - lo) / (hi - lo)).T  # 0-1 across the box
    base = (1 - z) ** 2
    return np.column_stack(
        [
            2.0 * (x - 0.5) * 2 * (0.5 + 0.5 * base),
            3.0 * y * (0.5 + 0.5 * base),
            -(2.0 + 18.0 * base),
        ]
    )


def make_pair(path: Path, folder: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """(source mesh file, target mesh file, points on the source (N, 3), their true images)."""
    import pyvista as pv

    points = np.asarray(pv.read(path).points, dtype=np.float64)
    lo, hi = points.min(0), points.max(0)
    moved = points + breathing(points, lo, hi)
    source = pv.PolyData(points).reconstruct_surface(sample_spacing=SOURCE_SPACING)
    target = pv.PolyData(moved).reconstruct_surface(sample_spacing=TARGET_SPACING)
    files = folder / f"{path.stem}_source.vtk", folder / f"{path.stem}_target.vtk"
    source.save(files[0])
    target.save(files[1])
    return *files, points, moved
