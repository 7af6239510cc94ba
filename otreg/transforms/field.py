"""Smooth displacement fields defined everywhere by Gaussian kernel regression."""

from __future__ import annotations

import numpy as np
import torch

from ..native import gaussian_average
from .base import DisplacementField

# Evaluate in chunks of query points so that one (chunk x K) kernel block stays small.
_BLOCK_ELEMENTS = 2_000_000


class KernelField(DisplacementField):
    """u(z) = sum_k w_k G(z, c_k) v_k / sum_k w_k G(z, c_k), G Gaussian of width ``sigma``.

    A Nadaraya-Watson average of the values ``v_k`` known at control points ``c_k``: defined at
    ANY point, equal to a local weighted mean of the matches near the data, and to the nearest
    controls' values far from it (never decaying to zero, never NaN).

    Args:
        controls: (K, 3) control points, mm, world RAS.
        values: (K, d) values at the controls: d = 3 for a displacement in mm, more columns for
            other smoothed quantities (otreg puts the match confidence in column 3).
        weights: (K,) weights >= 0 (mass x confidence of each match).
        sigma: kernel standard deviation, mm.
    """

    kind = "kernel"

    def __init__(self, controls: np.ndarray, values: np.ndarray, weights: np.ndarray, sigma: float):
        self.controls = np.asarray(controls, dtype=np.float64)
        self.values = np.asarray(values, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.sigma = float(sigma)

    def __call__(self, points: np.ndarray, *, device: str = "cpu") -> np.ndarray:
        """Evaluate at (N, 3) ``points`` (mm, RAS); returns (N, d) float64.

        On the CPU, over the controls within e^-12 of each point's largest weight only
        (:mod:`otreg.native.gaussian_average`); elsewhere, dense float32 blocks: the softmax
        logits log w_k - |z - c_k|^2 / (2 sigma^2) equal, up to a
        per-row constant that the softmax ignores, h_k + z . c_k / sigma^2 with
        h_k = log w_k - |c_k|^2 / (2 sigma^2): one matrix product per block (coordinates
        centred on the controls, so float32 keeps ~1e-4 mm).
        """
        center = self.controls.mean(0)

        def as_t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device)

        c = as_t((self.controls - center) / self.sigma)
        z = as_t((np.asarray(points, dtype=np.float64) - center) / self.sigma)
        v = as_t(self.values)
        with np.errstate(divide="ignore"):  # a zero weight: a control that does not count
            log_w = as_t(np.log(self.weights))
        if gaussian_average.available(z) and len(z) and len(c):  # the nearby controls only
            return gaussian_average.gaussian_average(z, c, log_w, v, 1.0).double().cpu().numpy()
        h = log_w - (c * c).sum(1) / 2
        out = torch.empty(len(z), v.shape[1], dtype=torch.float32, device=device)
        rows = max(1, _BLOCK_ELEMENTS // max(1, len(c)))
        for s in range(0, len(z), rows):
            logits = torch.addmm(h[None, :], z[s : s + rows], c.T)
            out[s : s + rows] = torch.softmax(logits, dim=1) @ v
        return out.double().cpu().numpy()

    @property
    def jacobian_step(self) -> float:
        return self.sigma / 50

    def approximate_inverse(self, points: np.ndarray) -> np.ndarray:
        """z - u regressed at the moved controls c_k + u_k (the same kernel and weights)."""
        return regressed_inverse(
            self.controls, self.values[:, :3], self.weights, self.sigma, points
        )

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {
            f"{prefix}kind": np.array(self.kind),
            f"{prefix}controls": self.controls,
            f"{prefix}values": self.values,
            f"{prefix}weights": self.weights,
            f"{prefix}sigma": np.array(self.sigma),
        }

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> KernelField:
        return cls(
            arrays[f"{prefix}controls"],
            arrays[f"{prefix}values"],
            arrays[f"{prefix}weights"],
            float(arrays[f"{prefix}sigma"]),
        )


def regressed_inverse(
    controls: np.ndarray, u: np.ndarray, weights: np.ndarray, sigma: float, points: np.ndarray
) -> np.ndarray:
    """Approximate inverse of z -> z + u(z) at (N, 3) ``points`` (mm, RAS), for a field known
    by its displacements u (K, 3) at ``controls`` (K, 3): y - v(y), v the Gaussian kernel
    average (width ``sigma`` mm, ``weights`` (K,)) of u placed at the moved controls c + u."""
    points = np.asarray(points, dtype=np.float64)
    return points + KernelField(controls + u, -u, weights, sigma)(points)
