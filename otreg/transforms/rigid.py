"""Rigid / similarity transforms as 4x4 homogeneous matrices acting on world RAS points (mm)."""

from __future__ import annotations

import numpy as np


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 homogeneous ``matrix`` to (N, 3) ``points``; returns (N, 3)."""
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def weighted_procrustes(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, *, scale: bool = False
) -> np.ndarray:
    """The 4x4 matrix A (rotation, translation, optional isotropic scale) minimising
    sum_i w_i |A x_i - y_i|^2 (Kabsch; Umeyama for the scale).

    Args:
        x, y: (N, 3) paired points, mm. w: (N,) weights >= 0, not all zero.
    """
    w = w / w.sum()
    cx, cy = w @ x, w @ y
    xc, yc = x - cx, y - cy
    cov = (yc * w[:, None]).T @ xc  # (3, 3) = sum_i w_i y_i x_i^T
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt)) or 1.0  # a reflection is never a rotation
    rotation = u @ np.diag(d) @ vt
    c = (s * d).sum() / (w @ (xc * xc).sum(1)) if scale else 1.0
    matrix = np.eye(4)
    matrix[:3, :3] = c * rotation
    matrix[:3, 3] = cy - c * rotation @ cx
    return matrix


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Angle (degrees) of a 3x3 rotation (or of the rotation part of a 4x4 matrix)."""
    r = rotation[:3, :3]
    r = r / np.cbrt(np.linalg.det(r))  # remove an isotropic scale
    cos = np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))


def matrix_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(rotation angle in degrees, translation in mm) of a @ inv(b): how far a is from b."""
    delta = a @ np.linalg.inv(b)
    return rotation_angle_deg(delta), float(np.linalg.norm(delta[:3, 3]))
