"""Truncated (sparse) Gibbs kernels for the fine scales of the multiscale solver.

At blur s, row i of the plan puts almost all of its mass on the columns j whose
``z_ij = h_j - C_ij / eps`` is within ``truncation`` of the row's maximum (h = log b + g / eps):
past that, an entry weighs less than exp(-truncation) of the largest one. The compiled search
(:mod:`otreg.ot._native`) finds ALL such entries of every row, by branch and bound over a tree
of the columns, for x -> y and for y -> x; both kernels then share the union of the two
supports, so that the f- and g-updates are those of one sparse matrix (Sinkhorn on two
supports diverged on vessel-like trees, measured).

A :class:`SparseKernel` is CSR with int32 indices (MKL's sparse matrix-vector product then
runs at about 0.5-1 ns per entry, measured) and stores its entries "absorbed" (Schmitzer 2019):
``vals_ij = exp(z_ij - m_i)`` for the h at build time, so that later updates only multiply by
exp(h - h_ref), numbers close to 1 that float32 holds well.
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Callable

import torch

from ..errors import SolverError
from . import _native
from .kernels import TruncatedKernel


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
    ):
        self.crow, self.col, self.cost, self.eps, self.search = crow, col, cost, eps, search
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
            _, _, _, vals, row_max = native_entries(
                "otreg_select",
                self.n_rows,
                h.dtype,
                self.n_rows,
                self.crow.long(),
                self.col,
                self.cost,
                h,
                1 / self.eps,
                math.inf,
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
            # the spread over all columns bounds that within any row, in O(m), not O(entries):
            # at the final blur of 100k-point cubes it stayed under half the truncation (measured)
            return False
        return (
            float(
                _native.typed("otreg_row_spread", h.dtype)(
                    self.n_rows,
                    _native.ptr(self.crow),
                    _native.ptr(self.col),
                    _native.ptr(change),
                    _native.threads(),
                )
            )
            > limit
        )

    def lse(self, h: torch.Tensor) -> torch.Tensor:
        """(n,) log sum_j exp(h_j - C_ij / eps) over the kept entries of each row."""
        e, shift = self._column_factors(h)
        return (self._csr @ e).log_().add_(self.m + shift)

    def average(self, h: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(n, k + 1): softmax_j(h_j - C_ij / eps)-weighted mean of values (m, k), then of
        C_ij / eps (the transport cost), per row."""
        e, _ = self._column_factors(h)
        sums = self._csr @ torch.cat([e[:, None] * values, e[:, None]], 1)
        cost_csr = torch.sparse_csr_tensor(
            self.crow,
            self.col,
            self._csr.values() * self.cost / self.eps,
            self._csr.shape,
            check_invariants=False,
        )
        cost = cost_csr @ e
        total = sums[:, -1:]
        return torch.cat([sums[:, :-1], cost[:, None]], 1) / total


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
) -> tuple[SparseKernel, SparseKernel]:
    """The kernels x -> y and y -> x at ``eps`` for the potentials f (n,), g (m,), on one support.

    Per row of x (n, D), ALL the columns of y (m, D) with z_ij = log b_j + (g_j - C_ij) / eps
    within ``truncation`` of the row's max, and the same for the rows of y; the kernels keep
    the union of both. CPU only, compiled (see :func:`otreg.ot._native.usable`); x and y sorted
    along a space-filling curve run fastest.

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
    x_t, y_t = x.T.contiguous(), y.T.contiguous()
    nnz = ctypes.c_int64()
    ptr = _native.ptr
    handle = _native.typed("otreg_pair", x.dtype)(
        len(x),
        ptr(x),
        ptr(x_t),
        len(y),
        ptr(y),
        ptr(y_t),
        x.shape[1],
        ptr(h_y),
        ptr(h_x),
        ptr(lse_x),
        ptr(lse_y),
        1 / eps,
        truncation,
        int(rows_only),
        ctypes.byref(nnz),
        _native.threads(),
    )
    if nnz.value >= 2**31:
        raise SolverError(
            f"the truncated kernels would hold {nnz.value} entries (int32 indices): "
            "use a larger blur or fewer points"
        )
    kernels = [
        (
            torch.empty(rows + 1, dtype=torch.int32),
            torch.empty(nnz.value, dtype=torch.int32),
            torch.empty(nnz.value, dtype=x.dtype),
            torch.empty(nnz.value, dtype=x.dtype),
            torch.empty(rows, dtype=x.dtype),
        )
        for rows in (len(x), len(y))
    ]
    _native.typed("otreg_take_pair", x.dtype)(
        handle, *(ptr(t) for kernel in kernels for t in kernel)
    )
    search = functools.partial(truncated_pair, x, y, log_a, log_b, reach, rows_only=rows_only)
    return (
        SparseKernel(*kernels[0], eps, h_y, search),
        SparseKernel(*kernels[1], eps, h_x, search),
    )


def native_entries(function: str, n_rows: int, dtype, *args):
    """Run the compiled select or truncate ``function`` on ``args`` (tensors or numbers; the
    function's last arguments, row_max, row_count and threads, are added) and collect its
    entries as (crow, col, cost, vals, row_max) of a CSR matrix of ``n_rows`` rows."""
    row_max = torch.empty(n_rows, dtype=dtype)
    counts = torch.empty(n_rows, dtype=torch.int64)
    pointers = [_native.ptr(a) if isinstance(a, torch.Tensor) else a for a in args]
    handle = _native.typed(function, dtype)(
        *pointers, _native.ptr(row_max), _native.ptr(counts), _native.threads()
    )
    nnz = int(counts.sum())
    col = torch.empty(nnz, dtype=torch.int32)
    cost, vals = torch.empty(nnz, dtype=dtype), torch.empty(nnz, dtype=dtype)
    _native.typed("otreg_take", dtype)(
        handle, _native.ptr(col), _native.ptr(cost), _native.ptr(vals)
    )
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).int()
    return crow, col, cost, vals, row_max
