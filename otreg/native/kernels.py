"""Typed wrappers of the compiled kernels: torch tensors in and out, no copies.

Each takes contiguous CPU tensors of one real dtype (float32 or float64; indices int32, CSR
row offsets int32 or int64 as stated), runs on ``torch.get_num_threads()`` threads without the
GIL, and returns tensors that share the extension's arrays; the grid samplers of the SVF
fields (:func:`trilinear`, :func:`squaring_step`) take and return numpy arrays, as those
fields hold. Callers check :func:`otreg.native.usable` (numpy: :func:`otreg.native.available`)
first. Errors of the C++ code become otreg's: an allocation that
fails (std::bad_alloc) an :class:`~otreg.errors.OutOfMemoryError`, kernels too large for
int32 indices or any other failure a :class:`~otreg.errors.SolverError`; a wrong dtype or shape
(a bug of the caller) stays a TypeError/ValueError.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from ..errors import NativeKernelError, OutOfMemoryError, SolverError
from . import load

# torch warns on every sparse CSR tensor it builds; the kernels built on these entries are such
# tensors, and the warning says nothing to a user of otreg
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

# (crow int32 (n + 1), col int32 (nnz), cost (nnz), val (nnz), row_max (n)) of one CSR kernel
Entries = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _array(t: torch.Tensor) -> np.ndarray:
    if not t.is_contiguous():
        raise ValueError("otreg's compiled kernels need contiguous tensors")
    return t.detach().numpy()


def _tensors(arrays) -> Entries:
    return tuple(torch.from_numpy(a) for a in arrays)  # type: ignore[return-value]


def _module():
    module = load()
    if module is None:
        raise RuntimeError("otreg's compiled kernels are not available (see otreg.native.usable)")
    return module


@contextlib.contextmanager
def translated_errors(kernel: str, problem: str) -> Iterator[None]:
    """Turn the errors of the compiled ``kernel`` (working on ``problem``, e.g. "20000 x 10000
    points") into otreg's, with a message that says what to do."""
    try:
        yield
    except MemoryError as err:
        raise OutOfMemoryError(
            f"out of memory in otreg's compiled kernel {kernel} ({problem}): use fewer points "
            "(--points), a larger blur or truncation, or give the job more memory"
        ) from err
    except OverflowError as err:
        raise SolverError(
            f"{err} in otreg's compiled kernel {kernel} ({problem}): use a larger blur or "
            "fewer points"
        ) from err
    except RuntimeError as err:
        raise NativeKernelError(
            f"otreg's compiled kernel {kernel} failed ({problem}): {err}"
        ) from err


def truncate(
    x: torch.Tensor,
    y_t: torch.Tensor,
    h: torch.Tensor,
    lse: torch.Tensor,
    inv_eps: float,
    truncation: float,
) -> Entries:
    """Per row of x (n, D), ALL the columns j of y_t (D, m) whose z_ij = h_j - |x_i - y_j|^2 / 2
    * inv_eps is within ``truncation`` of the row's max; ``lse`` (n,) guesses each row's
    log-sum-exp of z (at or above it by about 4 keeps the search fast and exact)."""
    module = _module()
    with translated_errors("truncate", f"{len(x)} x {y_t.shape[1]} points"):
        return _tensors(
            module.truncate(
                _array(x), _array(y_t), _array(h), _array(lse), inv_eps, truncation,
                torch.get_num_threads(),
            )
        )  # fmt: skip


def select(
    crow: torch.Tensor,
    col: torch.Tensor,
    cost: torch.Tensor,
    h: torch.Tensor,
    inv_eps: float,
    truncation: float,
) -> Entries:
    """The entries of the CSR kernel (crow int64 (n + 1), col, cost) whose z = h[col] - cost *
    inv_eps is within ``truncation`` of their row's max (infinite: all, re-absorbed)."""
    module = _module()
    with translated_errors("select", f"{len(col)} entries"):
        return _tensors(
            module.select(
                _array(crow.long()), _array(col), _array(cost), _array(h), inv_eps, truncation,
                torch.get_num_threads(),
            )
        )  # fmt: skip


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
    x's rows alone if ``rows_only``): see :func:`otreg.ot.sparse.truncated_pair`."""
    x, y = x.contiguous(), y.contiguous()
    x_t, y_t = x.T.contiguous(), y.T.contiguous()
    module = _module()
    with translated_errors("kernel_pair", f"{len(x)} x {len(y)} points"):
        xy, yx = module.kernel_pair(
            *(_array(t) for t in (x, x_t, y, y_t, h_y, h_x, lse_x, lse_y)),
            inv_eps,
            truncation,
            rows_only,
            torch.get_num_threads(),
        )
    return _tensors(xy), _tensors(yx)


def row_spread(crow: torch.Tensor, col: torch.Tensor, v: torch.Tensor) -> float:
    """The largest max - min of v (m,) over the columns of a row of (crow, col), int32
    (non-finite values count as 0)."""
    module = _module()
    with translated_errors("row_spread", f"{len(col)} entries"):
        return float(
            module.row_spread(_array(crow), _array(col), _array(v), torch.get_num_threads())
        )


def c_transform(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(N,) min_j |x_i - y_j|^2 / 2 - g_j over all j, exactly, by branch and bound over a tree
    of y (x (N, D), y (M, D) sorted along a space-filling curve for speed, g (M,); float64)."""
    module = _module()
    with translated_errors("c_transform", f"{len(x)} x {len(y)} points"):
        out = module.c_transform(
            _array(x.contiguous()),
            _array(y.T.contiguous()),
            _array(g.contiguous()),
            torch.get_num_threads(),
        )
    return torch.from_numpy(out)


def rounded_plan_cost(
    crow: torch.Tensor,
    col: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    f: torch.Tensor,
    g: torch.Tensor,
    eps: float,
) -> float:
    """Cost of the plan a_i b_j exp((f_i + g_j - C_ij) / eps) on the CSR entries (crow, col)
    rounded onto the marginals a (n,), b (m,): an upper bound on the exact OT cost (see
    :mod:`otreg.ot.certificate`). x (n, D), y (m, D); all float64."""
    module = _module()
    with translated_errors("rounded_plan_cost", f"{len(col)} entries"):
        return float(
            module.rounded_plan_cost(
                *(_array(t.contiguous()) for t in (crow.long(), col, x, y, a, b, f, g)),
                eps,
                torch.get_num_threads(),
            )
        )


def trilinear(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(N, C) trilinear values of a (X, Y, Z, C) grid (C-contiguous float32 or float64 numpy
    array) at (N, 3) fractional node indices (float64), in ``values``' dtype: each index is
    clamped to [0, size - 1] per axis first (beyond the grid, the border value), as
    ``torch.nn.functional.grid_sample`` with ``align_corners=True`` and
    ``padding_mode="border"`` computes it. Numpy arrays in and out (the grid fields are numpy).
    """
    module = _module()
    with translated_errors("trilinear", f"{len(index)} points on a {values.shape[:3]} grid"):
        return module.trilinear(values, index, torch.get_num_threads())


def squaring_step(u: np.ndarray, spacing: float) -> np.ndarray:
    """One squaring of scaling and squaring, into a new (X, Y, Z, 3) array: u(p) + u(p + u(p))
    at every node p of the displacement ``u`` (X, Y, Z, 3; mm; C-contiguous float32 or
    float64 numpy array) on a grid of ``spacing`` mm, u trilinear between the nodes and the
    border value beyond them (as :func:`trilinear`)."""
    module = _module()
    with translated_errors("squaring_step", f"a {u.shape[:3]} grid"):
        return module.squaring_step(u, float(spacing), torch.get_num_threads())
