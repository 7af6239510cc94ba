"""Log-sum-exp reductions over a point pair (i, j), the only heavy operations of the solver.

Both dense backends compute, for points already divided by sqrt(eps) by :func:`make_kernel`
(so that C_ij / eps is |x_i - y_j|^2 / 2 and no epsilon enters a compiled formula):

    lse_i      = log sum_j exp(h_j - |x_i - y_j|^2 / 2)                     (N,)
    average_i  = sum_j softmax_j(h_j - |x_i - y_j|^2 / 2) * v_ij            (N, k)

with v_ij = [values_j, |x_i - y_j|^2 / 2] for :meth:`Kernel.average` (the last column gives the
transport cost). ``TorchBlocks`` works on dense row blocks that fit in cache (fastest on the
CPU); ``KeOpsKernel`` never materialises a block (fastest on CUDA); the truncated
kernels of :mod:`otreg.ot.sparse` keep only the entries that matter. All implement
:class:`Kernel`, the one interface that the iterations (:mod:`otreg.ot.iterate`) use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from ..gpu import keops_installed, lazy_tensor, warn_no_keops


class Kernel(Protocol):
    """Log-sum-exp reductions between n rows and m columns (see the module docstring)."""

    name: str

    def lse(self, h: torch.Tensor) -> torch.Tensor:
        """(n,) log sum_j exp(h_j - C_ij / eps) for h (m,)."""
        ...

    def average(self, h: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(n, k + 1): the softmax_j(h_j - C_ij / eps)-weighted means of values (m, k), then of
        C_ij / eps, per row."""
        ...


@runtime_checkable
class TruncatedKernel(Kernel, Protocol):
    """A kernel that keeps only some entries per row, chosen for given potentials: it tells
    when the potentials have moved too far for its choice, and chooses again."""

    def drifted(self, h: torch.Tensor, limit: float) -> bool:
        """Whether h has moved within some row by more than ``limit`` since the choice."""
        ...

    search: Callable[..., tuple[TruncatedKernel, TruncatedKernel]]
    """``search(f, g, eps, truncation)``: this kernel and its partner, chosen again for the
    potentials f (n,), g (m,)."""


# Rows x columns of one dense block: about 8 MB of float32, which stays in the L2/L3 cache
# of common CPUs; larger blocks are slower per pair (benchmarks/README.md, design measurements).
_BLOCK_ELEMENTS = 2_000_000


def _logsumexp_rows(z: torch.Tensor) -> torch.Tensor:
    """logsumexp over dim 1, in place on ``z`` (faster than torch.logsumexp, which allocates).

    Exponents are clamped at -87 first: they then add under 1e-38 to a sum that is >= 1, while
    torch's CPU exp is much slower on inputs below about -88 (denormal and zero results; see
    benchmarks/README.md, design measurements).
    """
    top = z.amax(1, keepdim=True)
    return z.sub_(top).clamp_(min=-87.0).exp_().sum(1).log_().add_(top[:, 0])


def half_sq_dist_blocks(x: torch.Tensor, y: torch.Tensor):
    """Yield (start, stop, C) for consecutive row blocks: C = |x_i - y_j|^2 / 2 for rows
    start:stop of x (n, D) against all of y (m, D), blocks of about _BLOCK_ELEMENTS."""
    rows = max(1, _BLOCK_ELEMENTS // max(1, len(y)))
    half_sq_x = (x * x).sum(1) / 2
    half_sq_y = (y * y).sum(1) / 2
    for start in range(0, len(x), rows):
        stop = min(start + rows, len(x))
        c = torch.addmm(
            half_sq_y[None, :] + half_sq_x[start:stop, None], x[start:stop], y.T, alpha=-1
        )
        yield start, stop, c.clamp_(min=0)  # rounding can make the expanded form slightly negative


# A dense kernel of at most this many entries keeps its costs after the first reduction
# (16 MB of float32): the small problems (the rigid step's, the coarse levels') reduce over the
# same kernel many times, and computing the costs again took most of each reduction.
_KEPT_ELEMENTS = 4_000_000


class TorchBlocks(Kernel):
    """Dense torch reductions, computed block of rows by block of rows (the costs of a small
    kernel computed once and kept)."""

    name = "torch"

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y
        self._kept: list[tuple[int, int, torch.Tensor]] | None = None

    def _blocks(self):
        """(start, stop, C) as :func:`half_sq_dist_blocks`; C is read-only when kept."""
        if self._kept is not None:
            return self._kept
        if len(self.x) * len(self.y) <= _KEPT_ELEMENTS:
            self._kept = list(half_sq_dist_blocks(self.x, self.y))
            return self._kept
        return half_sq_dist_blocks(self.x, self.y)

    def lse(self, h: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(self.x), dtype=self.x.dtype, device=self.x.device)
        for s, e, c in self._blocks():
            out[s:e] = _logsumexp_rows(torch.sub(h[None, :], c))
        return out

    def average(self, h: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        out = torch.empty(
            len(self.x), values.shape[1] + 1, dtype=self.x.dtype, device=self.x.device
        )
        for s, e, c in self._blocks():
            w = torch.softmax(h[None, :] - c, dim=1)
            out[s:e, :-1] = w @ values
            out[s:e, -1] = (w * c).sum(1)
        return out


class KeOpsKernel(Kernel):
    """Symbolic (pykeops LazyTensor) reductions: O(N + M) memory, compiled on first use."""

    name = "keops"

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        LazyTensor = lazy_tensor()

        self._lazy = LazyTensor
        self.x_i = LazyTensor(x[:, None, :].contiguous())
        self.y_j = LazyTensor(y[None, :, :].contiguous())
        self.half_sq_dist = ((self.x_i - self.y_j) ** 2).sum(-1) / 2

    def lse(self, h: torch.Tensor) -> torch.Tensor:
        h_j = self._lazy(h[None, :, None].contiguous())
        return (h_j - self.half_sq_dist).logsumexp(dim=1).view(-1)

    def average(self, h: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        h_j = self._lazy(h[None, :, None].contiguous())
        v_j = self._lazy(values[None, :, :].contiguous())
        weights = v_j.concat(self.half_sq_dist)
        return (h_j - self.half_sq_dist).sumsoftmaxweight(weights, dim=1)


def make_kernel(backend: str, x: torch.Tensor, y: torch.Tensor, eps: float) -> Kernel:
    """Dense reductions of ``log sum_j exp(h_j - |x_i - y_j|^2 / (2 eps))`` between
    x (n, D) and y (m, D) for ``backend`` ('torch' or 'keops'; see :func:`choose_backend`)."""
    scale = math.sqrt(eps)
    if backend == "keops":
        return KeOpsKernel(x / scale, y / scale)
    if backend == "torch":
        return TorchBlocks(x / scale, y / scale)
    raise ValueError(f"unknown backend {backend!r}")


def choose_backend(backend: str, device: torch.device, small_only: bool = False) -> str:
    """'auto' -> KeOps on CUDA (never builds an N x M block; torch blocks, with a warning, where
    pykeops is not installed), dense torch blocks on the CPU. ``small_only``: the dense kernels
    will only serve small problems (the multiscale solver's coarse levels, under
    ``dense_pairs``): torch blocks there too, a few MB, without KeOps' compilations."""
    if backend != "auto":
        return backend
    if device.type != "cuda" or small_only:
        return "torch"
    if keops_installed():
        return "keops"
    warn_no_keops()
    return "torch"
