"""World frames: RAS+ (otreg, nibabel) and LPS+ (ITK, DICOM, 3D Slicer model files).

Every coordinate inside otreg is world RAS+ millimetres. Files that store LPS+ coordinates are
converted here, at I/O, and nowhere else. The two frames differ by a flip of the first two axes:
``p_lps = LPS_FROM_RAS @ p_ras`` with ``LPS_FROM_RAS = diag(-1, -1, 1)``, which is its own inverse.
"""

from __future__ import annotations

import numpy as np

#: (3, 3) matrix taking RAS+ coordinates to LPS+ (and back: it is an involution).
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
#: Same matrix, named for the other direction so call sites read in their frame.
RAS_FROM_LPS = LPS_FROM_RAS

_FLIP = np.array([-1.0, -1.0, 1.0])
_FLIP4 = np.diag([-1.0, -1.0, 1.0, 1.0])

SPACES = ("RAS", "LPS")


def ras_to_lps(points: np.ndarray) -> np.ndarray:
    """(N, 3) points (or vectors) in RAS+ mm -> new (N, 3) float64 array in LPS+ mm.

    Also accepts a single (3,) point. Vectors (displacements, normals) convert the same way
    because the change of frame is linear with no translation.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1:] != (3,):
        raise ValueError(f"expected points of shape (N, 3), got {p.shape}")
    return p * _FLIP


def lps_to_ras(points: np.ndarray) -> np.ndarray:
    """(N, 3) points (or vectors) in LPS+ mm -> new (N, 3) float64 array in RAS+ mm."""
    return ras_to_lps(points)  # the flip is its own inverse


def matrix_ras_to_lps(matrix: np.ndarray) -> np.ndarray:
    """Conjugate a (4, 4) homogeneous world matrix from RAS+ to LPS+.

    If ``m`` maps RAS points to RAS points, the result maps the same physical points expressed
    in LPS: ``F @ m @ F`` with ``F = diag(-1, -1, 1, 1)``. Applying it twice gives ``m`` back, so
    this also converts LPS -> RAS (:func:`matrix_lps_to_ras`).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"expected a (4, 4) matrix, got {m.shape}")
    return _FLIP4 @ m @ _FLIP4


def matrix_lps_to_ras(matrix: np.ndarray) -> np.ndarray:
    """Conjugate a (4, 4) homogeneous world matrix from LPS+ to RAS+ (see :func:`matrix_ras_to_lps`)."""
    return matrix_ras_to_lps(matrix)


def to_ras(points: np.ndarray, space: str) -> np.ndarray:
    """(N, 3) points stored in ``space`` ("RAS" or "LPS") -> float64 RAS+ copy."""
    space = check_space(space)
    p = np.asarray(points, dtype=np.float64)
    return lps_to_ras(p) if space == "LPS" else p.copy()


def from_ras(points: np.ndarray, space: str) -> np.ndarray:
    """(N, 3) RAS+ points -> float64 copy in ``space`` ("RAS" or "LPS")."""
    space = check_space(space)
    p = np.asarray(points, dtype=np.float64)
    return ras_to_lps(p) if space == "LPS" else p.copy()


def check_space(space: str) -> str:
    """Normalise a frame name ('ras', 'LPS' ...) to 'RAS' or 'LPS'; ValueError otherwise."""
    name = str(space).upper()
    if name not in SPACES:
        raise ValueError(f"unknown frame {space!r}: expected one of {', '.join(SPACES)}")
    return name
