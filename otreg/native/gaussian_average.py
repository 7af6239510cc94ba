"""Gaussian-weighted averages over the nearby controls only (compiled, exact to e^-truncation).

The smoothing fields of otreg are Nadaraya-Watson averages
``u(z) = sum_k w_k G(z, c_k) v_k / sum_k w_k G(z, c_k)`` with a Gaussian G of width sigma:
a softmax over k of ``log w_k - |z - c_k|^2 / (2 sigma^2)``. Only the controls whose logit is
within ``truncation`` of the largest matter (the others weigh less than e^-truncation of it),
and the compiled branch and bound (:func:`otreg.native.kernels.truncate`) finds exactly those:
the cost is that of the nearby controls, not of all of them (far faster than dense on large
clouds: benchmarks/README.md, design measurements). Far from every control the largest logit
is still found, so the average repeats the nearest controls' values, as the dense softmax does.
"""

from __future__ import annotations

import torch

from . import usable
from .kernels import c_transform, truncate
from .morton import curve_order

TRUNCATION = 12.0  # e^-12 ~ 6e-6: far below the millimetre on displacements of centimetres
_ENTRIES = 20_000_000  # kept entries at most per compiled call (about 250 MB)


def available(*tensors: torch.Tensor) -> bool:
    return usable(*tensors)


def gaussian_average(
    queries: torch.Tensor,
    controls: torch.Tensor,
    log_weights: torch.Tensor,
    values: torch.Tensor,
    sigma: float,
) -> torch.Tensor:
    """(N, d) softmax_k(log_weights_k - |q_i - c_k|^2 / (2 sigma^2))-weighted means of values.

    Args:
        queries: (N, 3), controls: (K, 3), same units and frame as sigma (centred near the
            origin for float32 precision). log_weights: (K,) (-inf: no weight). values: (K, d).
        All float32 or float64, on the CPU (see :func:`available`).
    """
    dtype = queries.dtype
    order_q, order_c = curve_order(queries), curve_order(controls)
    q = (queries[order_q] / sigma).contiguous()
    c = (controls[order_c] / sigma).contiguous()
    h = log_weights[order_c].contiguous()
    v = torch.cat([values[order_c].to(dtype), torch.ones(len(c), 1, dtype=dtype)], 1)
    out = torch.empty(len(q), values.shape[1], dtype=dtype)
    # each row's largest logit, exactly: then the search keeps what is within the truncation
    top = -c_transform(q.double(), c.double(), h.double()).to(dtype)
    # runs of queries (nearby ones: sorted along the curve) that keep about _ENTRIES entries (a
    # whole dense-field grid against thousands of controls at once held far too much memory):
    # the first run small enough even if a row kept every control, the next ones sized from
    # the previous run's fullest row, with a margin of 2 (neighbours along the curve keep about
    # as many; each compiled call costs a pass over the controls, so runs sized for the worst
    # case made many calls where few entries were kept)
    worst_case_rows = max(1, _ENTRIES // len(c))
    s, rows = 0, worst_case_rows
    while s < len(q):
        sums, fullest_row = _weighted_sums(q[s : s + rows], c, h, v, top[s : s + rows])
        out[order_q[s : s + rows]] = sums[:, :-1] / sums[:, -1:]
        s += rows
        rows = max(worst_case_rows, _ENTRIES // (2 * max(1, fullest_row)))
    return out


def _weighted_sums(
    q: torch.Tensor, c: torch.Tensor, h: torch.Tensor, v: torch.Tensor, top: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """(n, d): per row i, sum_k exp(h_k - |q_i - c_k|^2 / 2 - top_i) v_k over the controls
    within the truncation of the row's largest logit ``top_i``; and the most controls a row
    kept."""
    # truncate takes a guess of each row's log-sum-exp, and expects the max 4 below it (a
    # guess at or below the max keeps the search exact; above it, slow)
    guess = top + (4.0 - 1e-3)
    crow, col, _, vals, _ = truncate(q, c.T.contiguous(), h, guess.contiguous(), 1.0, TRUNCATION)
    weights = torch.sparse_csr_tensor(crow, col, vals, (len(q), len(c)), check_invariants=False)
    return weights @ v, int(crow.diff().max()) if len(q) else 0
