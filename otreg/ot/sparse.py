"""Truncated (sparse) Gibbs kernels for the fine scales of the multiscale solver.

At blur s, row i of the plan puts almost all of its mass on the columns j whose
``z_ij = h_j - C_ij / eps`` is within ``truncation`` of the row's maximum (h = log b + g / eps):
past that, an entry weighs less than exp(-truncation) of the largest one. The compiled search
(:mod:`otreg.native.kernels`) finds ALL such entries of every row, by branch and bound over a tree
of the columns, for x -> y and for y -> x; both kernels then share the union of the two
supports, so that the f- and g-updates are those of one sparse matrix (Sinkhorn on two
supports diverged on vessel-like trees).

A :class:`SparseKernel` is CSR with int32 indices (MKL's fast path for sparse matrix-vector
products; see benchmarks/README.md, design measurements) and stores its entries "absorbed"
(Schmitzer 2019): ``vals_ij = exp(z_ij - m_i)`` for the h at build time, so that later updates
only multiply by exp(h - h_ref), numbers close to 1 that float32 holds well.

Two implementations build the same kernels (``options.kernels``, :func:`truncation_backend`):
"native", the compiled CPU kernels, and "torch" (:mod:`otreg.ot.device_kernels`), block
bounds and segment sums in torch on the tensors' device: the GPU path, which the tests also
force on the CPU. Its kernels are :class:`DeviceSparseKernel` (row sums by ``index_add_``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from .. import native
from .kernels import TruncatedKernel


def _implementation(name: str):
    """The module that builds truncated kernels: 'native' (compiled, CPU) or 'torch'."""
    if name == "native":
        from ..native import kernels

        return kernels
    from . import device_kernels

    return device_kernels


def truncation_backend(choice: str, *tensors: torch.Tensor) -> str | None:
    """Which implementation builds the truncated kernels for ``tensors``: ``choice`` is
    ``options.kernels``; 'auto' takes the compiled kernels where usable (CPU, built), torch on
    CUDA, and None (dense kernels at every level) on a CPU without the compiled kernels;
    'native' the compiled kernels where usable, else None; 'torch' always torch."""
    if choice == "torch":
        return "torch"
    if native.usable(*tensors):
        return "native"
    if choice == "auto" and all(t.device.type == "cuda" for t in tensors):
        return "torch"
    return None


class SparseKernel(TruncatedKernel):
    """Truncated reductions ``log sum_j exp(h_j - C_ij / eps)`` over kept entries.

    Args:
        crow: (n + 1,) int32 row offsets; col: (nnz,) int32 column indices.
        cost: (nnz,) C_ij = |x_i - y_j|^2 / 2 of the kept entries.
        vals: (nnz,) exp(z_ij - row_max_i), z_ij = h_ref[col] - cost / eps.
        row_max: (n,) max_j z_ij of each row; eps: the kernel's epsilon; h_ref: (m,).
        search: ``search(f, g, eps, truncation)`` finds this kernel and its partner again for
            other potentials (the :class:`otreg.ot.kernels.TruncatedKernel` protocol).
    """

    name = "sparse"

    def __init__(
        self,
        crow,
        col,
        cost,
        vals,
        row_max,
        eps: float,
        h_ref: torch.Tensor,
        search: Callable[..., tuple[SparseKernel, SparseKernel]],
        implementation: str = "native",
    ):
        self.crow, self.col, self.cost, self.eps, self.search = crow, col, cost, eps, search
        self._kernels = _implementation(implementation)
        self.n_rows = len(crow) - 1
        self.h_search = h_ref  # the h the entries were chosen for
        self._set_values(vals, row_max, h_ref)

    @property
    def nnz(self) -> int:
        return len(self.col)

    def _set_values(self, vals: torch.Tensor, row_max: torch.Tensor, h_ref: torch.Tensor) -> None:
        self.m, self.h_ref = row_max, h_ref
        self._csr = torch.sparse_csr_tensor(
            self.crow, self.col, vals, (self.n_rows, len(h_ref)), check_invariants=False
        )

    def _column_factors(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """exp(h - h_ref - shift) and shift; re-absorbs h when that would lose precision."""
        d = h - self.h_ref
        spread = float(d.max() - d.min())
        # kept entries are >= exp(-truncation) ~ e^-12 of their row's largest (a little less
        # on the union of supports), so the products stay above float32's smallest normal
        # (e^-87) while the spread is below 60
        if not math.isfinite(spread) or spread > 60:
            _, _, _, vals, row_max = self._kernels.select(
                self.crow, self.col, self.cost, h.contiguous(), 1 / self.eps, math.inf
            )
            self._set_values(vals, row_max, h)
            d = h - self.h_ref
        shift = d.max()
        return (d - shift).exp_(), shift

    def drifted(self, h: torch.Tensor, limit: float) -> bool:
        """Whether ``h`` has moved, within some row, by more than ``limit`` (in units of z) from
        the h the entries were chosen for: the spread of the change over the kept columns of a
        row (a change that is constant over a row keeps its choice; a global tilt of the
        potentials moves each row by far less than its spread over the whole cloud)."""
        change = torch.nan_to_num(
            h - self.h_search, nan=0.0, posinf=0.0, neginf=0.0
        )  # as the compiled code
        if float(change.max() - change.min()) <= limit:
            # the spread over all columns bounds that within any row, in O(m), not O(entries),
            # and on cubes at the final blur it usually stays under the limit
            return False
        return self._kernels.row_spread(self.crow, self.col, change.contiguous()) > limit

    def _product(self, dense: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Row sums sum_j vals_ij (* scale_ij) dense_j over the kept entries: (n,) for dense
        (m,), (n, k) for (m, k)."""
        csr = self._csr
        if scale is not None:
            csr = torch.sparse_csr_tensor(
                self.crow, self.col, csr.values() * scale, csr.shape, check_invariants=False
            )
        return csr @ dense

    def lse(self, h: torch.Tensor) -> torch.Tensor:
        """(n,) log sum_j exp(h_j - C_ij / eps) over the kept entries of each row."""
        e, shift = self._column_factors(h)
        return self._product(e).log_().add_(self.m + shift)

    def average(self, h: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(n, k + 1): softmax_j(h_j - C_ij / eps)-weighted mean of values (m, k), then of
        C_ij / eps (the transport cost), per row."""
        e, _ = self._column_factors(h)
        sums = self._product(torch.cat([e[:, None] * values, e[:, None]], 1))
        cost = self._product(e, self.cost / self.eps)
        total = sums[:, -1:]
        return torch.cat([sums[:, :-1], cost[:, None]], 1) / total


class DeviceSparseKernel(SparseKernel):
    """A :class:`SparseKernel` whose row sums are ``index_add_`` over the entries (the torch
    implementation: the same operations on CUDA and on the CPU, no sparse library)."""

    def _set_values(self, vals: torch.Tensor, row_max: torch.Tensor, h_ref: torch.Tensor) -> None:
        self.m, self.h_ref, self._vals = row_max, h_ref, vals
        if not hasattr(self, "_rows"):
            from .device_kernels import row_ids

            self._rows, self._cols = row_ids(self.crow), self.col.long()

    def _product(self, dense: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        vals = self._vals if scale is None else self._vals * scale
        terms = dense[self._cols]
        terms = terms * (vals if dense.dim() == 1 else vals[:, None])
        out = dense.new_zeros((self.n_rows, *dense.shape[1:]))
        return out.index_add_(0, self._rows, terms)


def truncated_pair(
    x: torch.Tensor,
    y: torch.Tensor,
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    reach: float | None,
    f: torch.Tensor,
    g: torch.Tensor,
    eps: float,
    truncation: float,
    rows_only: bool = False,
    implementation: str = "native",
) -> tuple[SparseKernel, SparseKernel]:
    """The kernels x -> y and y -> x at ``eps`` for the potentials f (n,), g (m,), on one support.

    Per row of x (n, D), ALL the columns of y (m, D) with z_ij = log b_j + (g_j - C_ij) / eps
    within ``truncation`` of the row's max, and the same for the rows of y; the kernels keep
    the union of both, built by ``implementation`` ('native': compiled, CPU only, see
    :func:`otreg.native.usable`; 'torch': any device); x and y sorted along a space-filling
    curve run fastest.

    Args:
        x, y: (n, D), (m, D) points; log_a, log_b: (n,), (m,) log weights.
        reach: unbalanced OT length (None: balanced); f and g are damped by it.
        rows_only: keep the entries of the rows of x alone (y -> x is their transpose).
    """
    x, y = x.contiguous(), y.contiguous()
    damping = 1.0 if reach is None else 1.0 / (1.0 + eps / reach**2)
    h_y, h_x = (log_b + g / eps).contiguous(), (log_a + f / eps).contiguous()
    # the potentials tell each row's log-sum-exp: a good guess makes the search fast
    lse_x, lse_y = (-f / (damping * eps)).contiguous(), (-g / (damping * eps)).contiguous()
    kernel_xy, kernel_yx = _implementation(implementation).kernel_pair(
        x, y, h_y, h_x, lse_x, lse_y, 1 / eps, truncation, rows_only
    )
    if rows_only:
        kernel_xy, kernel_yx = _cover_columns(
            x, y, h_y, h_x, lse_y, (kernel_xy, kernel_yx), 1 / eps, truncation, implementation
        )
    search = functools.partial(
        truncated_pair,
        x,
        y,
        log_a,
        log_b,
        reach,
        rows_only=rows_only,
        implementation=implementation,
    )
    kind = SparseKernel if implementation == "native" else DeviceSparseKernel

    def kernel(entries, h: torch.Tensor) -> SparseKernel:
        crow, col, cost, vals, row_max = entries
        return kind(crow, col, cost, vals, row_max, eps, h, search, implementation)

    return kernel(kernel_xy, h_y), kernel(kernel_yx, h_x)


def _cover_columns(x, y, h_y, h_x, lse_y, pair, inv_eps: float, truncation: float, implementation):
    """The kernels ``pair`` of x's rows alone, with the entries of every column of y that no row
    kept added (each such column's own truncated row, y_j -> x): a column without entries has
    an empty softmin, and its g-update would be infinite (a source lobe whose target was cut in
    half diverged so, at the first blur; benchmarks/README.md). Usually no column is empty,
    and the pair comes back as it is."""
    kernel_xy, kernel_yx = pair
    crow_yx = kernel_yx[0]
    empty = (crow_yx[1:] == crow_yx[:-1]).nonzero()[:, 0]
    if len(empty) == 0:
        return pair
    from . import device_kernels

    lonely, lse = y[empty].contiguous(), lse_y[empty].contiguous()
    if implementation == "native":
        from ..native import kernels as native_kernels

        crow, col_x, *_ = native_kernels.truncate(
            lonely, x.T.contiguous(), h_x, lse, inv_eps, truncation
        )
        rows_new, col_x = device_kernels.row_ids(crow), col_x.long()
    else:
        rows_new, col_x, _ = device_kernels.truncate(lonely, x, h_x, inv_eps, truncation, lse)
    rows = torch.cat([device_kernels.row_ids(kernel_xy[0]), col_x])
    cols = torch.cat([kernel_xy[1].long(), empty[rows_new]])
    return device_kernels.pair_on(x, y, rows, cols, h_y, h_x, inv_eps)
