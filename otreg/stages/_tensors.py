"""Moving point clouds between numpy (I/O, float64) and torch (solver) once per stage."""

from __future__ import annotations

import numpy as np
import torch


def to_torch(array: np.ndarray, dtype: str, device: str) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=getattr(torch, dtype), device=device)


def unit_mass(weights: np.ndarray) -> np.ndarray:
    """Weights scaled to sum 1: source and target masses differ (areas, volumes), and the
    balanced problem, like ``reach``, is about proportions."""
    return weights / weights.sum()
