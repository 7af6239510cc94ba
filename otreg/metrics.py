"""Numbers that judge a registration: residual distances and target registration error."""

from __future__ import annotations

import numpy as np
import torch

_BLOCK_ELEMENTS = 4_000_000


def nearest_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) distance (mm) from each of the (N, 3) points ``x`` to the nearest of the (M, 3) ``y``.

    Exact: a branch and bound over a tree of y (the compiled c-transform with g = 0, both
    clouds sorted along a space-filling curve), else dense blocks."""
    from . import native

    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    out = torch.empty(len(xt), dtype=torch.float64)
    if native.usable(xt) and len(yt):
        from .native.kernels import c_transform
        from .native.morton import curve_order

        order_x, order_y = curve_order(xt), curve_order(yt)
        out[order_x] = (2 * c_transform(xt[order_x], yt[order_y], yt.new_zeros(len(yt)))).sqrt()
        return out.numpy()
    rows = max(1, _BLOCK_ELEMENTS // max(1, len(yt)))
    for s in range(0, len(xt), rows):
        out[s : s + rows] = torch.cdist(xt[s : s + rows], yt).min(dim=1).values
    return out.numpy()


def residual(x: np.ndarray, wx: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Weighted mean and 95th percentile of the distance from cloud x to cloud y, mm."""
    d = nearest_distances(x, y)
    order = np.argsort(d)
    cdf = np.cumsum(wx[order]) / wx.sum()
    return {
        "mean_mm": float(wx @ d / wx.sum()),
        "p95_mm": float(d[order][np.searchsorted(cdf, 0.95)]),
    }


def distance_summary(d: np.ndarray) -> dict[str, float]:
    """mean / median / p95 / max of distances (mm)."""
    return {
        "mean_mm": float(d.mean()),
        "median_mm": float(np.median(d)),
        "p95_mm": float(np.percentile(d, 95)),
        "max_mm": float(d.max()),
    }


def target_registration_error(
    moved_source_landmarks: np.ndarray, target_landmarks: np.ndarray
) -> np.ndarray:
    """(L,) distances (mm) between paired (L, 3) landmarks."""
    return np.linalg.norm(moved_source_landmarks - target_landmarks, axis=1)
