"""The truncated kernels of the multiscale solver in torch: the GPU path (and the CPU, forced).

The same functions, arguments and results as the compiled CPU kernels
(:mod:`otreg.native.kernels`: ``kernel_pair``, ``select``, ``row_spread``), so that
:mod:`otreg.ot.sparse` builds the same kernels from either: per row, ALL the columns whose
z_ij = h_j - |x_i - y_j|^2 / 2 * inv_eps is within ``truncation`` of the row's max, the union
of the row and column truncations, CSR with int32 indices and values absorbed.

Where the compiled code walks a tree row by row, this module works on blocks: the points,
sorted along a space-filling curve, are cut into runs of ``_BLOCK`` consecutive points (compact
boxes). For every pair of a row block I and a column block J an upper bound of z over the pair
(the compiled kernels' affine bound of h over J's box minus the cost from I's box) is compared
with a lower bound of the smallest row max of I (the exact z over I's most promising blocks);
the pairs that may hold a kept entry are then evaluated densely, on whatever device the
tensors live. Exact, like the compiled search: no kept entry is missed; only the amount of
wasted work differs.
"""

from __future__ import annotations

import torch

from ..errors import OutOfMemoryError, SolverError

# (crow int32 (n + 1), col int32 (nnz), cost (nnz), val (nnz), row_max (n)) of one CSR kernel
from ..native.kernels import Entries

_BLOCK = 32  # points per block: the compiled kernels' tree leaves hold as many
# block pairs above which blocks grow (x2 per step, to 128): bounding every pair of blocks
# costs O(N M / B^2), evaluating the kept pairs O(B) per kept entry
_BLOCK_PAIRS = 1 << 26
_PROBES = 8  # column blocks per row block whose exact z give the lower bound of the row max
# log sum exp - max <= log(columns of weight): a row's guessed lse lies about this far above its
# max (a row of e^4 ~ 50 columns of equal z), as in the compiled search
_LSE_ABOVE_MAX = 4.0
_INT32_MAX = 2**31 - 1


_STORED_CHUNKS = 8  # candidates' z kept between the two passes up to this many chunks


def _chunk_elements(device: torch.device) -> int:
    """Elements of the largest temporary (float64 bounds, candidate costs) per chunk."""
    return 1 << 26 if device.type == "cuda" else 1 << 22


def _block_size(n: int, m: int) -> int:
    """Points per block for n rows and m columns."""
    block = _BLOCK
    while block < 128 and -(-n // block) * -(-m // block) > _BLOCK_PAIRS:
        block *= 2
    return block


def _blocks(points: torch.Tensor, block: int) -> torch.Tensor:
    """(n, D) -> (ceil(n / B), B, D), the last block padded with copies of the last point."""
    n, dim = points.shape
    pad = -n % block
    if pad:
        points = torch.cat([points, points[-1:].expand(pad, dim)])
    return points.view(-1, block, dim)


def _padded(h: torch.Tensor, block: int) -> torch.Tensor:
    """(m,) -> (ceil(m / B), B): padding columns get h = -inf (never kept)."""
    pad = -len(h) % block
    if pad:
        h = torch.cat([h, h.new_full((pad,), -torch.inf)])
    return h.view(-1, block)


class _ColumnBlocks:
    """Boxes and affine bounds of h over blocks of columns (float64): h_j <= offset +
    slope . (y_j - center) for every column j of a block, slope the least-squares fit (as the
    compiled kernels' tree nodes; any slope is valid, a good one is tight)."""

    def __init__(self, y_blk: torch.Tensor, h_blk: torch.Tensor):
        y, h = y_blk.double(), h_blk.double()
        self.low, self.high = y.amin(1), y.amax(1)
        finite = torch.isfinite(h)
        w = finite.double()
        count = w.sum(1).clamp(min=1)
        self.center = (y * w[..., None]).sum(1) / count[:, None]
        h0 = torch.where(finite, h, 0.0)
        mean_h = h0.sum(1) / count
        u = (y - self.center[:, None]) * w[..., None]
        cov = u.transpose(1, 2) @ u
        cross = (u * ((h0 - mean_h[:, None]) * w)[..., None]).sum(1)
        trace = cov.diagonal(dim1=1, dim2=2).sum(1)
        eye = torch.eye(y.shape[2], dtype=y.dtype, device=y.device)
        cov = cov + (1e-9 * trace + 1e-300)[:, None, None] * eye  # flat blocks
        slope = torch.linalg.solve_ex(cov, cross[..., None])[0][..., 0]
        self.slope = torch.nan_to_num(slope, nan=0.0, posinf=0.0, neginf=0.0)
        residual = h - ((y - self.center[:, None]) * self.slope[:, None]).sum(2)
        self.offset = torch.where(finite, residual, -torch.inf).amax(1)

    def bounds(self, x_lo: torch.Tensor, x_hi: torch.Tensor, eps: float) -> torch.Tensor:
        """(r, mb): an upper bound of z over every row of the boxes [x_lo, x_hi] (r, D) and
        every column of each block: per axis, the affine bound minus the cost from the box's
        nearest point, maximised over the block's box (concave and separable per axis)."""
        w = self.slope[None]
        lo, hi = x_lo.double()[:, None], x_hi.double()[:, None]
        best = torch.where(w >= 0, hi + w * eps, lo + w * eps)
        best = torch.maximum(torch.minimum(best, self.high[None]), self.low[None])
        gap = (torch.maximum(lo - best, best - hi)).clamp_(min=0)
        terms = w * (best - self.center[None]) - gap * gap * (0.5 / eps)
        return self.offset[None] + terms.sum(2)


def _half_sq_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x - y|^2 / 2 over the last axis, by differences (as the compiled kernels: exact
    digits for nearby points far from the origin)."""
    return ((x - y) ** 2).sum(-1) * 0.5


def truncate(
    x: torch.Tensor,
    y: torch.Tensor,
    h: torch.Tensor,
    inv_eps: float,
    truncation: float,
    lse: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of x (n, D), ALL the columns j of y (m, D) with z_ij = h_j - |x_i - y_j|^2 / 2 *
    inv_eps >= max_j z_ij - truncation (none for a row whose every z is -inf).

    Args:
        lse: (n,) a guess of each row's log sum_j exp z_ij (from its potential), or None: as
            in the compiled search, ``lse - 4`` serves as a first floor of the row's max; a
            guess that proves too high is caught and the row's block done again with a
            floor that is always safe.

    Returns:
        rows (k,) int64, cols (k,) int64 of the kept entries (in block order) and the row
        maxima (n,) (-inf for rows without mass).
    """
    n, m, dim = len(x), len(y), x.shape[1]
    device, eps = x.device, 1.0 / inv_eps
    block = _block_size(n, m)
    x_blk, y_blk, h_blk = _blocks(x, block), _blocks(y, block), _padded(h, block)
    nb, mb = len(x_blk), len(y_blk)
    columns = _ColumnBlocks(y_blk, h_blk)
    x_lo, x_hi = x_blk.amin(1), x_blk.amax(1)
    # candidates in the coordinates of their row block's centre: |x - y|^2 by matrix products
    # keeps its digits there (the kept pairs lie close together)
    x_center = (x_lo + x_hi) / 2
    x_local = x_blk - x_center[:, None]
    half_sq_x = (x_local * x_local).sum(2) * (0.5 * inv_eps)  # (nb, B)
    chunk = _chunk_elements(device)
    probes = min(_PROBES, mb)
    rows_per_chunk = max(1, chunk // (dim * max(mb, probes * block * block)))
    guess = None
    if lse is not None:  # a guess that is not finite is no guess
        guess = lse.to(x.dtype) - _LSE_ABOVE_MAX
        guess = _padded(torch.where(torch.isfinite(guess), guess, -torch.inf), block)
    lane = torch.arange(block, device=device)

    def z_of(bi: torch.Tensor, bj: torch.Tensor) -> torch.Tensor:
        """(p, B, B): z of the block pairs (bi, bj)."""
        y_local = y_blk[bj] - x_center[bi][:, None]
        half_sq_y = (y_local * y_local).sum(2) * (0.5 * inv_eps)
        cross = torch.bmm(x_local[bi], y_local.transpose(1, 2)) * inv_eps
        z = cross.sub_(half_sq_x[bi][:, :, None]).sub_(half_sq_y[:, None, :])
        return z.add_(h_blk[bj][:, None, :])

    pair_i, pair_j, safe_floor, floor = [], [], [], []
    for start in range(0, nb, rows_per_chunk):
        stop = min(nb, start + rows_per_chunk)
        upper = columns.bounds(x_lo[start:stop], x_hi[start:stop], eps)  # (r, mb)
        # a lower bound of every row's max: the exact z over the most promising blocks
        best = upper.topk(probes, dim=1).indices  # (r, probes)
        bi = torch.arange(start, stop, device=device).repeat_interleave(probes)
        z = z_of(bi, best.flatten()).view(stop - start, probes, block, block)
        row_floor = z.amax(3).amax(1)  # (r, B): <= each row's max
        safe = row_floor.amin(1)
        first = safe if guess is None else torch.maximum(row_floor, guess[start:stop]).amin(1)
        keep = (upper >= (first - truncation)[:, None].to(upper.dtype)) & (upper > -torch.inf)
        i, j = keep.nonzero(as_tuple=True)
        pair_i.append(i + start)
        pair_j.append(j)
        safe_floor.append(safe)
        floor.append(first)
    blocks_i, blocks_j = torch.cat(pair_i), torch.cat(pair_j)
    pairs_per_chunk = max(1, chunk // (block * block * dim))
    # the candidates' z, kept from the pass that finds the row maxima for the pass that
    # selects, where they fit in a few chunks' memory (else computed again)
    store = len(blocks_i) * block * block <= _STORED_CHUNKS * chunk
    segments: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def maxima(bi: torch.Tensor, bj: torch.Tensor, row_max: torch.Tensor) -> None:
        for s in range(0, len(bi), pairs_per_chunk):
            bi_s, bj_s = bi[s : s + pairs_per_chunk], bj[s : s + pairs_per_chunk]
            z = z_of(bi_s, bj_s)
            index = (bi_s[:, None] * block + lane).flatten()
            row_max.scatter_reduce_(0, index, z.amax(2).flatten(), "amax")
            segments.append((bi_s, bj_s, z if store else None))

    row_max = torch.full((nb * block,), -torch.inf, dtype=x.dtype, device=device)
    maxima(blocks_i, blocks_j, row_max)
    if guess is not None:
        # a row whose max is below its block's floor may miss columns: its block is searched
        # again from the safe floor (the blocks between the two floors are added)
        floors, safes = torch.cat(floor), torch.cat(safe_floor)
        missed = (row_max.view(nb, block) < floors[:, None].to(x.dtype)).any(1).nonzero()[:, 0]
        if len(missed):
            upper = torch.cat(
                [
                    columns.bounds(x_lo[part], x_hi[part], eps)
                    for part in missed.split(rows_per_chunk)
                ]
            )
            low = (safes[missed] - truncation)[:, None].to(upper.dtype)
            high = (floors[missed] - truncation)[:, None].to(upper.dtype)
            i, j = ((upper >= low) & (upper < high) & (upper > -torch.inf)).nonzero(as_tuple=True)
            maxima(missed[i], j, row_max)
    threshold = row_max - truncation
    rows, cols = [], []
    for bi, bj, stored in segments:
        z = z_of(bi, bj) if stored is None else stored
        row = bi[:, None] * block + lane  # (p, B)
        kept = (z >= threshold[row][:, :, None]) & torch.isfinite(z)
        p, r, c = kept.nonzero(as_tuple=True)
        rows.append(bi[p] * block + r)
        cols.append(bj[p] * block + c)
    rows_t = torch.cat(rows) if rows else torch.empty(0, dtype=torch.long, device=device)
    cols_t = torch.cat(cols) if cols else torch.empty(0, dtype=torch.long, device=device)
    real = (rows_t < n) & (cols_t < m)
    return rows_t[real], cols_t[real], row_max[:n]


def _csr_rows(rows: torch.Tensor, n: int) -> torch.Tensor:
    """(n + 1,) int32 row offsets of entries sorted by row."""
    counts = torch.bincount(rows, minlength=n)
    crow = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = counts.cumsum(0)
    return crow.int()


def _absorb(
    rows: torch.Tensor, col: torch.Tensor, cost: torch.Tensor, h: torch.Tensor, n: int, inv_eps
) -> tuple[torch.Tensor, torch.Tensor]:
    """vals = exp(z - row max), z = h[col] - cost * inv_eps, and the row maxima (n,)."""
    z = h[col] - cost * inv_eps
    row_max = torch.full((n,), -torch.inf, dtype=z.dtype, device=z.device)
    row_max.scatter_reduce_(0, rows, z, "amax")
    vals = torch.nan_to_num((z - row_max[rows]).exp(), nan=0.0)
    return vals, row_max


def _check_size(nnz: int, problem: str) -> None:
    if nnz > _INT32_MAX:
        raise SolverError(
            f"the truncated kernels would hold {nnz} entries (int32 indices; {problem}): "
            "use a larger blur or fewer points"
        )


def kernel_pair(
    x: torch.Tensor,
    y: torch.Tensor,
    h_y: torch.Tensor,
    h_x: torch.Tensor,
    lse_x: torch.Tensor,
    lse_y: torch.Tensor,
    inv_eps: float,
    truncation: float,
    rows_only: bool,
) -> tuple[Entries, Entries]:
    """The truncated kernels x (n, D) -> y (m, D) and y -> x on the union of both supports (of
    x's rows alone if ``rows_only``), as :func:`otreg.native.kernels.kernel_pair`; ``lse_x``,
    ``lse_y`` guess the rows' log-sum-exp (:func:`truncate`)."""
    n, m = len(x), len(y)
    try:
        rows, cols, _ = truncate(x, y, h_y, inv_eps, truncation, lse_x)
        if not rows_only:
            cols_t, rows_t, _ = truncate(y, x, h_x, inv_eps, truncation, lse_y)
            rows, cols = torch.cat([rows, rows_t]), torch.cat([cols, cols_t])
    except torch.OutOfMemoryError as err:
        raise _out_of_memory(f"{n} x {m} points") from err
    return pair_on(x, y, rows, cols, h_y, h_x, inv_eps)


def pair_on(
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    h_y: torch.Tensor,
    h_x: torch.Tensor,
    inv_eps: float,
) -> tuple[Entries, Entries]:
    """The kernels x (n, D) -> y (m, D) and y -> x on the entries (rows, cols) (int64, any
    order, repeats allowed), values absorbed for h_y (m,) and h_x (n,)."""
    n, m = len(x), len(y)
    problem = f"{n} x {m} points"
    try:
        keys = torch.unique(rows * m + cols)  # sorted: by row, then column
        _check_size(len(keys), problem)
        rows, cols = keys // m, keys % m
        cost = _half_sq_dist(x[rows], y[cols])
        order = torch.argsort(cols * n + rows)
        rows_yx, cols_yx, cost_yx = cols[order], rows[order], cost[order]
        val_xy, max_xy = _absorb(rows, cols, cost, h_y, n, inv_eps)
        val_yx, max_yx = _absorb(rows_yx, cols_yx, cost_yx, h_x, m, inv_eps)
    except torch.OutOfMemoryError as err:
        raise _out_of_memory(problem) from err
    return (
        (_csr_rows(rows, n), cols.int(), cost, val_xy, max_xy),
        (_csr_rows(rows_yx, m), cols_yx.int(), cost_yx, val_yx, max_yx),
    )


def _out_of_memory(problem: str) -> OutOfMemoryError:
    return OutOfMemoryError(
        f"out of device memory in otreg's truncated kernels ({problem}): use fewer points "
        "(--points), a larger blur or truncation, or a device with more memory"
    )


def row_ids(crow: torch.Tensor) -> torch.Tensor:
    """(nnz,) int64 row of each entry of the CSR offsets ``crow`` (n + 1,)."""
    n = len(crow) - 1
    return torch.repeat_interleave(
        torch.arange(n, device=crow.device), crow.long().diff(), output_size=int(crow[-1])
    )


def select(
    crow: torch.Tensor,
    col: torch.Tensor,
    cost: torch.Tensor,
    h: torch.Tensor,
    inv_eps: float,
    truncation: float,
) -> Entries:
    """The entries of the CSR kernel (crow (n + 1), col, cost) whose z = h[col] - cost * inv_eps
    is within ``truncation`` of their row's max (infinite: all, re-absorbed), as
    :func:`otreg.native.kernels.select`."""
    n = len(crow) - 1
    rows = row_ids(crow)
    col = col.long()
    vals, row_max = _absorb(rows, col, cost, h, n, inv_eps)
    if truncation == float("inf"):
        return crow.int(), col.int(), cost, vals, row_max
    z = h[col] - cost * inv_eps
    kept = z >= row_max[rows] - truncation
    rows, col, cost, vals = rows[kept], col[kept], cost[kept], vals[kept]
    return _csr_rows(rows, n), col.int(), cost, vals, row_max


def row_spread(crow: torch.Tensor, col: torch.Tensor, v: torch.Tensor) -> float:
    """The largest max - min of v (m,) over the columns of a row of (crow, col) (non-finite
    values count as 0), as :func:`otreg.native.kernels.row_spread`."""
    n = len(crow) - 1
    if n == 0 or len(col) == 0:
        return 0.0
    rows = row_ids(crow)
    values = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)[col.long()]
    high = torch.full((n,), -torch.inf, dtype=v.dtype, device=v.device)
    low = torch.full((n,), torch.inf, dtype=v.dtype, device=v.device)
    high.scatter_reduce_(0, rows, values, "amax")
    low.scatter_reduce_(0, rows, values, "amin")
    spread = torch.where(torch.isfinite(high), high - low, 0.0)
    return float(spread.max())
