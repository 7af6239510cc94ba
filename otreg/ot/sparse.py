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
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from ..native import kernels
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
            _, _, _, vals, row_max = kernels.select(
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
        return kernels.row_spread(self.crow, self.col, change.contiguous()) > limit

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
    the union of both. CPU only, compiled (see :func:`otreg.native.usable`); x and y sorted
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
    kernel_xy, kernel_yx = kernels.kernel_pair(
        x, y, h_y, h_x, lse_x, lse_y, 1 / eps, truncation, rows_only
    )
    search = functools.partial(truncated_pair, x, y, log_a, log_b, reach, rows_only=rows_only)
    return (
        SparseKernel(*kernel_xy, eps, h_y, search),
        SparseKernel(*kernel_yx, eps, h_x, search),
    )
