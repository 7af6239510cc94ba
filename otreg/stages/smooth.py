"""Step 3: smoothing the raw OT matches into a displacement field defined everywhere."""

from __future__ import annotations

import numpy as np

from ..transforms.field import KernelField
from .match import Matches


def smooth(points: np.ndarray, weights: np.ndarray, matches: Matches, sigma: float) -> KernelField:
    """Gaussian kernel regression (width ``sigma`` mm) of the match displacements.

    Each match counts with its point's mass times its confidence, so points that unbalanced OT
    left unmatched barely pull the field. The field carries the confidence as a 4th column.

    Args:
        points: (N, 3) source points the matches start from, mm RAS.
        weights: (N,) their weights.
    """
    values = np.column_stack([matches.targets - points, matches.confidence])
    return KernelField(points, values, weights * matches.confidence, sigma)
