"""Kernel ridge regression of displacements: a regularised fit, defined at any point.

The field is an affine map (optionally plus a quadratic one: ``trend``) plus a sum of Gaussian
kernels (one or several widths) centred on the control points,

    u(z) = A^T [z, 1] + Q^T q(z - m) + sum_k K(z, c_k) alpha_k,
    K(z, c) = mean_s exp(-|z - c|^2 / (2 s^2)),

q the six products (z - m)_i (z - m)_j, i <= j, about the controls' mean m (Q = 0 for an affine
trend),

fitted to values y_k with weights w_k (mean 1) by penalised least squares,

    min  sum_k w_k |u(c_k) - y_k|^2 + lambda alpha^T K alpha        (the trend is free),

the posterior mean of a Gaussian process with that trend, kernel K and match noise of
variance lambda / w_k (relative to the process's). Unlike a Nadaraya-Watson average it is not
pulled towards the local mean of unevenly sampled data, and far from the data it continues the
trend. A quadratic trend leaves breathing's large-scale curvature (the base moves most)
unpenalised: the penalty then only shrinks what is left, instead of flattening the motion
towards the lung base (benchmarks/README.md). The linear system is solved by conjugate gradients with blocked kernel products
(pykeops on CUDA): O(N) memory, never an N x N matrix.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..gpu import keops_installed, lazy_tensor, warn_no_keops
from .base import DisplacementField
from .field import KernelField, regressed_inverse

log = logging.getLogger(__name__)

# Rows x columns of one dense kernel block (float32: about 8 MB, cache-sized, as in otreg.ot).
_BLOCK_ELEMENTS = 2_000_000
# fit_ridge keeps K itself up to this many entries (float32: 64 MB; 4,000 controls)
_DENSE_FIT_ELEMENTS = 16_000_000


class RidgeField(DisplacementField):
    """u(z) = A^T [z, 1] + sum_k K(z, c_k) alpha_k (see the module docstring).

    Args:
        controls: (K, 3) control points, mm, world RAS.
        coefficients: (K, 3) alpha_k, mm.
        affine: (4, 3) A: rows 0-2 the linear part (unitless), row 3 the translation (mm); or
            (10, 3): A, then the quadratic trend's Q (as ``quadratic``), as :func:`fit_ridge`
            returns them.
        sigmas: kernel widths, mm (K is the mean of the Gaussians of these widths).
        extra: an optional field whose columns follow the displacement in the output (otreg
            puts the smoothed match confidence there: a Nadaraya-Watson average, which stays
            within the range of the values it averages).
        quadratic: optional (6, 3) Q of the quadratic trend, mm^-1, on the products of
            :func:`quadratic_terms` about ``controls.mean(0)``.
    """

    kind = "ridge"

    def __init__(
        self,
        controls: np.ndarray,
        coefficients: np.ndarray,
        affine: np.ndarray,
        sigmas: Sequence[float],
        extra: KernelField | None = None,
        quadratic: np.ndarray | None = None,
    ):
        self.controls = np.asarray(controls, dtype=np.float64)
        self.coefficients = np.asarray(coefficients, dtype=np.float64)
        trend = np.asarray(affine, dtype=np.float64).reshape(-1, 3)
        if len(trend) not in (4, 4 + len(TREND_TERMS)):
            raise ValueError(f"affine must be (4, 3) or (10, 3), got {trend.shape}")
        self.affine = trend[:4]
        self.sigmas = [float(s) for s in np.atleast_1d(sigmas)]
        self.extra = extra
        if len(trend) > 4:
            quadratic = trend[4:]
        self.quadratic = None if quadratic is None else np.asarray(quadratic, np.float64)
        if self.quadratic is not None and self.quadratic.shape != (len(TREND_TERMS), 3):
            raise ValueError(f"quadratic must be (6, 3), got {self.quadratic.shape}")

    def __call__(self, points: np.ndarray, *, device: str = "cpu") -> np.ndarray:
        """(N, 3 + k) at (N, 3) ``points`` (mm, RAS): u(z) in mm, then the extra columns."""
        points = np.asarray(points, dtype=np.float64)
        center = self.controls.mean(0)
        kernel = GaussianKernel(
            _as_tensor(points - center, device),
            _as_tensor(self.controls - center, device),
            self.sigmas,
        )
        u = (kernel @ _as_tensor(self.coefficients, device)).double().cpu().numpy()
        u += np.column_stack([points, np.ones(len(points))]) @ self.affine
        u += self.trend_curvature(points)
        if self.extra is None:
            return u
        return np.column_stack([u, self.extra(points, device=device)])

    def trend_curvature(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) the quadratic part of the trend at (N, 3) ``points`` (0 for an affine one)."""
        if self.quadratic is None:
            return np.zeros((len(points), 3))
        return quadratic_terms(points - self.controls.mean(0)) @ self.quadratic

    @property
    def jacobian_step(self) -> float:
        return min(self.sigmas) / 50

    def approximate_inverse(self, points: np.ndarray) -> np.ndarray:
        """z - u regressed at the moved controls (unit weights, the first kernel width)."""
        u = self(self.controls)[:, :3]
        return regressed_inverse(
            self.controls, u, np.ones(len(self.controls)), self.sigmas[0], points
        )

    # ------------------------------------------------------------------ files
    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        arrays = {
            f"{prefix}kind": np.array(self.kind),
            f"{prefix}controls": self.controls,
            f"{prefix}coefficients": self.coefficients,
            f"{prefix}affine": self.affine,
            f"{prefix}sigmas": np.array(self.sigmas),
        }
        if self.extra is not None:
            arrays.update(self.extra.to_arrays(f"{prefix}extra_"))
        if self.quadratic is not None:
            arrays[f"{prefix}quadratic"] = self.quadratic
        return arrays

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> RidgeField:
        extra = (
            KernelField.from_arrays(arrays, f"{prefix}extra_")
            if f"{prefix}extra_controls" in arrays
            else None
        )
        return cls(
            arrays[f"{prefix}controls"],
            arrays[f"{prefix}coefficients"],
            arrays[f"{prefix}affine"],
            arrays[f"{prefix}sigmas"],
            extra,
            arrays.get(f"{prefix}quadratic"),
        )


class GaussianKernel:
    """The (N, M) matrix K_ij = mean_s exp(-|x_i - y_j|^2 / (2 s^2)) as a linear operator.

    ``kernel @ v`` for v (M, d) never builds K: dense row blocks of about _BLOCK_ELEMENTS on
    the CPU, a pykeops reduction on CUDA. x (N, 3), y (M, 3) in mm, centred near the origin
    (float32 loses the small distances of far-off coordinates), widths ``sigmas`` in mm.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, sigmas: Sequence[float]):
        self.x, self.y, self.sigmas = x, y, list(sigmas)

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        if self.x.device.type == "cuda":
            if keops_installed():
                return self._keops(v)
            warn_no_keops()
        out = torch.empty(len(self.x), v.shape[1], dtype=v.dtype, device=v.device)
        for rows, block in self._blocks():
            out[rows] = block @ v
        return out

    def dense(self) -> torch.Tensor:
        """The (N, M) matrix K itself (float32, N x M x 4 bytes)."""
        out = torch.empty(len(self.x), len(self.y), dtype=self.x.dtype, device=self.x.device)
        for rows, block in self._blocks():
            out[rows] = block
        return out

    def _blocks(self):
        """(row slice, K[rows]) in dense row blocks of about _BLOCK_ELEMENTS entries."""
        half_sq_y = (self.y * self.y).sum(1) / 2
        half_sq_x = (self.x * self.x).sum(1) / 2
        rows = max(1, _BLOCK_ELEMENTS // max(1, len(self.y)))
        for s in range(0, len(self.x), rows):
            half_sq_dist = torch.addmm(
                half_sq_y[None, :] + half_sq_x[s : s + rows, None],
                self.x[s : s + rows],
                self.y.T,
                alpha=-1,
            ).clamp_(min=0)
            yield slice(s, s + rows), _mean_gaussians(half_sq_dist, self.sigmas)

    def _keops(self, v: torch.Tensor) -> torch.Tensor:
        LazyTensor = lazy_tensor()
        x_i = LazyTensor(self.x[:, None, :].contiguous())
        y_j = LazyTensor(self.y[None, :, :].contiguous())
        sq_dist = ((x_i - y_j) ** 2).sum(-1)
        out = sum((sq_dist / (-2 * s * s)).exp() @ v.contiguous() for s in self.sigmas)
        return out / len(self.sigmas)


#: exp(-87): the exponents are clamped there, as in otreg.ot.kernels (exp, and products, are
#: much slower on denormal results)
_SMALLEST = float(np.exp(-87.0))


def _mean_gaussians(half_sq_dist: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """mean_s max(exp(-d / s^2), e^-87) over the widths, for d = |x - y|^2 / 2 (overwritten).

    Only the widest Gaussian costs an exp: a width s' = s / 2^(k/2) below the one before
    (ratios of 2 between the presets' widths: k = 2) is its Gaussian squared k times,
    exp(-d / s'^2) = exp(-d / s^2)^(2^k) (a relative error of about 2^k float32 roundings).
    """
    widths = sorted(sigmas, reverse=True)
    gauss = (half_sq_dist / (-(widths[0] ** 2))).clamp_(min=-87.0).exp_()
    total = gauss.clone() if len(widths) > 1 else gauss
    for wider, sigma in itertools.pairwise(widths):
        squarings = math.log2((wider / sigma) ** 2)
        if sigma < wider and abs(squarings - round(squarings)) < 1e-9 and squarings <= 4:
            for _ in range(round(squarings)):
                gauss.square_()
            gauss.clamp_(min=_SMALLEST)
        else:
            gauss = (half_sq_dist / (-sigma * sigma)).clamp_(min=-87.0).exp_()
        total += gauss
    return total.div_(len(widths))


#: trend: the free (unpenalised) part of the fit: the number of its product terms per degree
TREND_TERMS = [(i, j) for i in range(3) for j in range(i, 3)]  # the quadratic trend's products


def quadratic_terms(offsets: np.ndarray) -> np.ndarray:
    """(N, 6) the products o_i o_j, i <= j (order of ``TREND_TERMS``), of (N, 3) offsets, mm^2."""
    return np.column_stack([offsets[:, i] * offsets[:, j] for i, j in TREND_TERMS])


def fit_ridge(
    points: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    sigmas: Sequence[float],
    regularization: float,
    *,
    trend: str = "affine",
    device: str = "cpu",
    tol: float = 1e-3,
    max_iter: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (N, 3) and trend (4, 3) of the kernel ridge fit of (N, 3) ``values``
    (mm) known at (N, 3) ``points`` (mm), smoothness weight ``regularization`` (lambda > 0).

    ``weights``: (N,) >= 0, or (N, 3, 3) symmetric positive semi-definite matrices W_k (the data
    term is then sum_k (u(c_k) - y_k)^T W_k (u(c_k) - y_k): a match may count less along the
    directions in which it is unreliable). Value k has noise (co)variance lambda W_k^-1 relative
    to the field's prior variance, so weights are counted in typical matches (1 for one
    match, n for the mean of n).

    With S_k = W_k^(1/2) (block-diagonal S) and Q the projector orthogonal to the affine
    functions seen through S, the coefficients are alpha = S beta with

        (Q S K S Q + lambda I) beta = Q S y,

    a symmetric positive definite system (eigenvalues >= lambda) solved by conjugate gradients
    to a relative residual ``tol``; the affine part is then the weighted least-squares fit of
    y - K alpha. Points of weight 0 get alpha = 0.

    ``trend = "quadratic"``: the free part also holds the quadratic functions (Q above is
    orthogonal to them too); the trend returned is then (10, 3), A and then Q (the
    :class:`RidgeField` layout).
    """
    points = np.asarray(points, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    n = len(points)
    root = _matrix_sqrt(np.asarray(weights, dtype=np.float64), n)  # (N, 3, 3)
    center = points.mean(0)
    position = trend_basis(points - center, trend)  # (N, P): [offset, 1 (, products)]
    terms = position.shape[1]
    # the products in units of the cloud's size: the least squares stay well conditioned
    scale = np.abs(position).max(0).clip(min=1e-12)
    # d(S_k u(c_k)) / dA for u = A^T [c, 1]: design[k, i, P j + l] = S_k[i, j] position[k, l]
    design = np.einsum("kij,kl->kijl", root, position / scale).reshape(3 * n, 3 * terms)
    basis, _ = np.linalg.qr(design)  # orthonormal basis of S (the trend): Q = I - U U^T

    as_t = lambda a: _as_tensor(a, device)  # noqa: E731
    s, u_basis = as_t(root), as_t(basis)
    kernel: GaussianKernel | torch.Tensor = GaussianKernel(
        as_t(points - center), as_t(points - center), sigmas
    )
    if (
        isinstance(kernel, GaussianKernel)
        and kernel.x.device.type == "cpu"
        and n * n <= _DENSE_FIT_ELEMENTS
    ):
        # every CG iteration multiplies by the same K: built once, each product is one matmul
        kernel = kernel.dense()

    def times_s(v: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kij,kj->ki", s, v)

    def project(v: torch.Tensor) -> torch.Tensor:
        flat = v.reshape(-1, 1)
        return (flat - u_basis @ (u_basis.T @ flat)).reshape(v.shape)

    def operator(v: torch.Tensor) -> torch.Tensor:
        return project(times_s(kernel @ times_s(project(v)))) + regularization * v

    rhs = project(times_s(as_t(values)))
    beta, iterations, residual = conjugate_gradient(operator, rhs, tol, max_iter)
    log.debug("ridge fit: %d CG iterations, relative residual %.1e", iterations, residual)
    alpha = times_s(beta).double().cpu().numpy()
    rest = values - (kernel @ as_t(alpha)).double().cpu().numpy()
    coefficients, *_ = np.linalg.lstsq(
        design, np.einsum("kij,kj->ki", root, rest).ravel(), rcond=None
    )
    affine = coefficients.reshape(3, terms).T / scale[:, None]
    affine[3] -= center @ affine[:3]  # back to uncentred coordinates: [x, 1] @ affine
    return alpha, affine


def trend_basis(offsets: np.ndarray, trend: str) -> np.ndarray:
    """(N, 4) [o, 1], or (N, 10) [o, 1, o_i o_j] for ``trend = "quadratic"``, of (N, 3) offsets
    from the controls' mean, mm."""
    affine = np.column_stack([offsets, np.ones(len(offsets))])
    if trend == "affine":
        return affine
    if trend == "quadratic":
        return np.column_stack([affine, quadratic_terms(offsets)])
    raise ValueError(f"trend must be 'affine' or 'quadratic', got {trend!r}")


def _matrix_sqrt(weights: np.ndarray, n: int) -> np.ndarray:
    """(N, 3, 3) W^(1/2) of (N,) scalar or (N, 3, 3) symmetric PSD weights."""
    if weights.shape == (n,):
        return np.sqrt(weights)[:, None, None] * np.eye(3)
    if weights.shape != (n, 3, 3):
        raise ValueError(f"weights must be ({n},) or ({n}, 3, 3), got {weights.shape}")
    eigenvalues, vectors = np.linalg.eigh(weights)
    return np.einsum("kij,kj,klj->kil", vectors, np.sqrt(eigenvalues.clip(min=0)), vectors)


def conjugate_gradient(operator, rhs: torch.Tensor, tol: float, max_iter: int):
    """Solve operator(x) = rhs for a symmetric positive definite linear operator on tensors of
    ``rhs``'s shape (inner product: the sum over all entries). Returns (x, iterations,
    relative residual |rhs - operator(x)| / |rhs|)."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rr = rr0 = float((r * r).sum())
    k = 0
    while k < max_iter and rr > tol**2 * rr0:
        k += 1
        ap = operator(p)
        step = rr / float((p * ap).sum())
        x += step * p
        r -= step * ap
        rr, rr_old = float((r * r).sum()), rr
        p = r + (rr / rr_old) * p
    relative = (rr / rr0) ** 0.5 if rr0 > 0 else 0.0
    if relative > tol:
        log.warning(
            "ridge fit: CG stopped after %d iterations (relative residual %.1e > %.0e)",
            max_iter,
            relative,
            tol,
        )
    return x, k, relative


def _as_tensor(array: np.ndarray, device: str) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=device)
