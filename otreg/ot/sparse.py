"""Truncated (sparse) Gibbs kernels for the fine scales of the multiscale solver.

At blur s, row i of the plan puts almost all of its mass on the columns j whose
``z_ij = h_j - C_ij / eps`` is within ``truncation`` of the row's maximum (h = log b + g / eps):
past that, an entry weighs less than exp(-truncation) of the largest one. A
:class:`SparseKernel` keeps only those entries, in CSR form with int32 indices (MKL's sparse
matrix-vector product then runs at about 0.5 ns per entry on two cores, measured), and stores
them "absorbed" (Schmitzer 2019): ``vals_ij = exp(z_ij - m_i)`` for the h at build time, so
that later updates only multiply by exp(h - h_ref), numbers close to 1 that float32 holds well.

The candidates of a fine level come from the kept entries of the coarser one: the children of
every kept cluster pair (I, J) are evaluated as padded dense blocks, batched (see
:func:`expand`), so the cost of a build is a few times the number of kept entries.
"""

from __future__ import annotations

import itertools
import math

import torch

from .kernels import half_sq_dist_blocks

_BATCH_ELEMENTS = 2_000_000  # candidate pairs per batched block: a few tens of MB


class SparseKernel:
    """Row-truncated reductions ``log sum_j exp(h_j - C_ij / eps)`` over kept entries.

    Args:
        crow: (n + 1,) row offsets; col: (nnz,) column indices; row: (nnz,) row indices.
        cost: (nnz,) C_ij = |x_i - y_j|^2 / 2 of the kept entries.
        z: (nnz,) h_ref[col] - cost / eps; eps: the kernel's epsilon; h_ref: (m,).
        n_cols: m.
    """

    name = "sparse"

    def __init__(self, crow, col, row, cost, z, eps: float, h_ref: torch.Tensor, n_rows: int,
                 superset: SparseKernel | None = None):
        self.crow, self.col, self.row, self.cost = crow, col, row, cost
        self.eps, self.n_rows = eps, n_rows
        # the entries first searched at this level: later truncations re-select from them,
        # so that entries the potentials have since made heavy are not lost
        self.superset = superset or self
        self._set_values(z, h_ref)

    @property
    def nnz(self) -> int:
        return len(self.col)

    def _set_values(self, z: torch.Tensor, h_ref: torch.Tensor) -> None:
        self.m = _segment_max(z, self.crow)
        self.h_ref = h_ref
        vals = (z - self.m.index_select(0, self.row)).exp_()
        self._csr = torch.sparse_csr_tensor(
            self.crow, self.col, vals, (self.n_rows, len(h_ref)), check_invariants=False
        )

    def _column_factors(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """exp(h - h_ref - shift) and shift; re-absorbs h when that would lose precision."""
        d = h - self.h_ref
        spread = float(d.max() - d.min())
        # kept entries are >= exp(-truncation - slack) ~ e^-16 of their row's largest, so the
        # products stay above float32's smallest normal (e^-87) while the spread is below 60
        if not math.isfinite(spread) or spread > 60:
            self._set_values(h.index_select(0, self.col) - self.cost / self.eps, h)
            d = h - self.h_ref
        shift = d.max()
        return (d - shift).exp_(), shift

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
            self.crow, self.col, self._csr.values() * self.cost / self.eps, self._csr.shape,
            check_invariants=False,
        )
        cost = cost_csr @ e
        total = sums[:, -1:]
        return torch.cat([sums[:, :-1], cost[:, None]], 1) / total

    def _select(self, h: torch.Tensor, eps: float, truncation: float):
        """(mask, z) over the superset's entries: those within ``truncation`` of their row's
        max of z = h_j - C_ij / eps."""
        full = self.superset
        z = h.index_select(0, full.col) - full.cost / eps
        return z >= _segment_max(z, full.crow).index_select(0, full.row) - truncation, z

    def refilter(self, h: torch.Tensor, eps: float, truncation: float) -> SparseKernel:
        """The kernel at ``eps`` <= this one's, for the potentials in ``h``: the entries of the
        superset within ``truncation`` of their row's max."""
        full = self.superset
        keep, z = self._select(h, eps, truncation)
        row = full.row[keep]
        return SparseKernel(_crow(row, self.n_rows), full.col[keep], row, full.cost[keep],
                            z[keep], eps, h, self.n_rows, superset=full)

    def pattern(self, h: torch.Tensor, eps: float, truncation: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(crow, col) int64 of the entries within ``truncation`` of their row's max at
        ``eps``: the indices only, without building the kernel's values."""
        keep, _ = self._select(h, eps, truncation)
        return _crow(self.superset.row[keep], self.n_rows).long(), self.superset.col[keep].long()


def dense_pattern(x, y, h, eps: float, truncation: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(crow, col) int64 of the entries of a dense (n, m) problem within ``truncation`` of
    their row's max of h_j - |x_i - y_j|^2 / (2 eps); for coarse levels only."""
    counts, cols = [], []
    for _, _, c in half_sq_dist_blocks(x, y):
        z = h[None, :] - c / eps
        keep = z >= z.amax(1, keepdim=True) - truncation
        counts.append(keep.sum(1))
        cols.append(keep.nonzero()[:, 1])
    crow = torch.cat([counts[0].new_zeros(1), torch.cat(counts).cumsum(0)])
    return crow, torch.cat(cols)


def expand(parent_crow, parent_col, row_children, col_children, x, y, h, eps: float,
           truncation: float) -> SparseKernel:
    """The truncated kernel between fine clouds x (n, D) and y (m, D), searching only the
    children of the kept coarse pairs.

    Args:
        parent_crow, parent_col: int64 CSR of the kept coarse pairs (I, J).
        row_children: (n_I + 1,) offsets: coarse row cluster I holds fine rows
            row_children[I]:row_children[I+1]; col_children the same for columns.
        h: (m,) log b + g / eps at the fine level.
    """
    n, m = len(x), len(y)
    col_size = col_children[1:] - col_children[:-1]
    row_size = row_children[1:] - row_children[:-1]
    # the candidate columns of coarse row I, flattened: children of each kept J in turn
    pair_size = col_size[parent_col]
    pair_end = pair_size.cumsum(0)
    flat_crow = torch.cat([pair_end.new_zeros(1), pair_end])[parent_crow]
    n_candidates = flat_crow[1:] - flat_crow[:-1]
    cuts = _batch_cuts(row_size * n_candidates)
    half_sq_x = (x * x).sum(1) / 2
    half_sq_y = (y * y).sum(1) / 2
    rows_out, cols_out, z_out, cost_out = [], [], [], []
    for lo, hi in itertools.pairwise(cuts):
        rows, row_mask = _ranges(row_children[lo:hi], row_size[lo:hi])
        flat, col_mask = _ranges(flat_crow[lo:hi], n_candidates[lo:hi])
        flat.clamp_(max=max(int(pair_end[-1]) - 1, 0) if len(pair_end) else 0)
        pair = torch.searchsorted(pair_end, flat, right=True)
        cols = col_children[parent_col[pair]] + flat - (pair_end[pair] - pair_size[pair])
        rows.clamp_(max=n - 1)
        cols.clamp_(max=m - 1)
        xb, yb = x[rows], y[cols]
        cost = torch.baddbmm(half_sq_x[rows][:, :, None] + half_sq_y[cols][:, None, :],
                             xb, yb.transpose(1, 2), alpha=-1).clamp_(min=0)
        z = h[cols][:, None, :] - cost / eps
        z.masked_fill_(~col_mask[:, None, :], -math.inf)
        keep = z >= z.amax(2, keepdim=True) - truncation
        keep &= row_mask[:, :, None] & col_mask[:, None, :]
        bi, ri, ci = keep.nonzero(as_tuple=True)
        rows_out.append(rows[bi, ri])
        cols_out.append(cols[bi, ci])
        z_out.append(z[bi, ri, ci])
        cost_out.append(cost[bi, ri, ci])
    row = torch.cat(rows_out)
    return SparseKernel(_crow(row, n), torch.cat(cols_out).int(), row.int(),
                        torch.cat(cost_out), torch.cat(z_out), eps, h, n)


def _ranges(starts: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, max size) indices starts[b] + k and the mask k < sizes[b]."""
    width = int(sizes.max()) if len(sizes) else 0
    k = torch.arange(max(width, 1), device=starts.device)
    return starts[:, None] + k, k < sizes[:, None]


def _batch_cuts(work: torch.Tensor) -> list[int]:
    """Boundaries of consecutive batches of about _BATCH_ELEMENTS units of ``work``."""
    total = work.cumsum(0)
    end = int(total[-1]) if len(total) else 0
    marks = torch.arange(_BATCH_ELEMENTS, max(end, _BATCH_ELEMENTS), _BATCH_ELEMENTS, device=work.device)
    cuts = torch.searchsorted(total, marks).add_(1).tolist()
    return sorted({0, *[c for c in cuts if 0 < c < len(work)], len(work)})


def _crow(row: torch.Tensor, n: int) -> torch.Tensor:
    """int32 CSR row offsets of sorted row indices."""
    counts = torch.bincount(row.long(), minlength=n)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)]).int()


def _segment_max(z: torch.Tensor, crow: torch.Tensor) -> torch.Tensor:
    """(n,) max of z over each CSR row (-inf for an empty row)."""
    lengths = (crow[1:] - crow[:-1]).long()
    return torch.segment_reduce(z, "max", lengths=lengths, unsafe=True)
