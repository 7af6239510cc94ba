"""The ridge fit's smoothness weight chosen from the matches themselves.

The kernel ridge fit of :mod:`otreg.transforms.ridge` is the posterior mean of a Gaussian
process: whitened values z = S y (S = W^(1/2)) are an affine trend plus a field of covariance
tau^2 S K S plus noise of covariance tau^2 lambda I. Orthogonally to the affine functions seen
through S (projector Q), M = Q S K S Q = V diag(mu) V^T, and with c = V^T Q z (per coordinate)
everything the fit does at the data is diagonal: the residual of coefficient i is
lambda / (mu_i + lambda) c_i. Two criteria follow in closed form for every lambda at once
from one eigendecomposition:

- generalized cross-validation (Craven & Wahba):
  GCV(lambda) = N |r|^2 / tr(I - H)^2, r the whitened residuals, N = 3 n values,
  tr(I - H) = 3 sum_i lambda / (mu_i + lambda);
- the restricted marginal likelihood of the GP view, the scale tau^2 profiled out:
  -2 log L = n' log(sum_i |c_i|^2 / (mu_i + lambda) / n') + 3 sum_i log(mu_i + lambda),
  n' = 3 (n - 4).

Dense O(n^3): the controls are subsampled to at most ``max_points`` (lambda is per unit of
weight, so a subsample estimates the same value).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .ridge import trend_basis

log = logging.getLogger(__name__)

#: the candidate weights: from nearly interpolating to nearly affine
CANDIDATES = np.logspace(-3, 4, 57)


def _spectrum(m: np.ndarray, z: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues mu (n,) of the symmetric (n, n) ``m`` and the squared projections c2 (n,)
    onto its eigenvectors of ``z`` (n, 3) without its part along ``basis`` (n, P), summed over
    the 3 coordinates. In float32, by torch (faster than numpy's float64: benchmarks/README.md):
    the criteria compare mu with lambda >= 1e-3, far above float32's errors on eigenvalues of
    at most a few tens (DIR-LAB's)."""
    import torch

    z = z - basis @ (basis.T @ z)
    mu, vectors = torch.linalg.eigh(torch.from_numpy(m).float())
    c2 = torch.square(vectors.T @ torch.from_numpy(z).float()).sum(1)
    return mu.double().numpy(), c2.double().numpy()


def select_regularization(
    points: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    sigmas: Sequence[float],
    *,
    criterion: str = "gcv",
    trend: str = "affine",
    candidates: np.ndarray = CANDIDATES,
    max_points: int = 1500,
    seed: int = 0,
) -> tuple[float, dict[str, float]]:
    """The smoothness weight lambda of the kernel ridge fit of (n, 3) ``values`` (mm) at
    (n, 3) ``points`` (mm) with (n,) weights (or (n, 3, 3) matrices, taken by their mean
    eigenvalue) and Gaussian widths ``sigmas`` (mm): the candidate with the lowest ``criterion``
    ("gcv" or "likelihood"; see the module docstring). ``trend``: the fit's free part
    ("affine" or "quadratic", :func:`otreg.transforms.ridge.fit_ridge`).

    Returns (lambda, {"gcv": ..., "likelihood": ...}: the lambda each criterion picks).
    """
    points = np.asarray(points, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 3:
        weights = np.trace(weights, axis1=1, axis2=2) / 3
    keep = weights > 0
    points, values, weights = points[keep], values[keep], weights[keep]
    if len(points) > max_points:
        pick = np.random.default_rng(seed).choice(len(points), max_points, replace=False)
        points, values, weights = points[pick], values[pick], weights[pick]
    n = len(points)
    # too few to tell the field from the noise: the smoothest candidate
    if n < 2 * (4 if trend == "affine" else 10):
        return float(candidates[-1]), {}
    x = points - points.mean(0)
    sq = np.square(x).sum(1)
    half_sq_dist = np.maximum((sq[:, None] + sq[None, :]) / 2 - x @ x.T, 0)
    # summed in place: fresh n x n temporaries per width cost more than the exponentials
    kernel, gauss = np.zeros_like(half_sq_dist), np.empty_like(half_sq_dist)
    for s in sigmas:
        kernel += np.exp(np.multiply(half_sq_dist, -1 / (s * s), out=gauss), out=gauss)
    kernel /= len(sigmas)
    root = np.sqrt(weights)
    design = trend_basis(x, trend)
    basis, _ = np.linalg.qr(root[:, None] * design / np.abs(design).max(0).clip(min=1e-12))
    free = design.shape[1]
    m = kernel
    m *= root[:, None]
    m *= root[None, :]
    # Q m Q = m - U P^T - P U^T + U (U^T P) U^T, P = m U: one low-rank update, in place
    mu_basis = m @ basis
    rest = mu_basis - basis @ (basis.T @ mu_basis)
    m -= np.hstack([basis, mu_basis]) @ np.hstack([rest, basis]).T
    m += m.T
    m /= 2
    mu, c2 = _spectrum(m, z=root[:, None] * values, basis=basis)
    # the trend's directions (mu = 0, no data there) out of the trace and the likelihood
    order = np.argsort(mu)
    mu, c2 = np.clip(mu[order[free:]], 0, None), c2[order[free:]]
    lam = np.asarray(candidates, dtype=np.float64)[:, None]
    shrink = lam / (mu[None, :] + lam)
    gcv = 3 * n * (shrink**2 * c2).sum(1) / (3 * shrink.sum(1)) ** 2
    dof = 3 * len(mu)
    likelihood = dof * np.log((c2 / (mu + lam)).sum(1) / dof) + 3 * np.log(mu + lam).sum(1)
    picks = {
        "gcv": float(candidates[int(np.argmin(gcv))]),
        "likelihood": float(candidates[int(np.argmin(likelihood))]),
    }
    if criterion not in picks:
        raise ValueError(f"criterion must be 'gcv' or 'likelihood', got {criterion!r}")
    log.debug("ridge smoothness weight from %d controls: %s", n, picks)
    return picks[criterion], picks
