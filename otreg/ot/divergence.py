"""The Sinkhorn divergence: entropic OT with its self-transport bias removed (debiasing).

    S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2

OT_eps(a, b) exceeds the exact OT cost by an entropic bias that grows with the blur; the two
self-transport terms carry nearly the same bias, so S_eps is a far better estimate of the OT
cost at a given blur, is >= 0 and is 0 when a = b (Feydy et al. 2019, "Interpolating between
optimal transport and MMD using Sinkhorn divergences"; GeomLoss's ``debias=True``).
"""

from __future__ import annotations

import torch

from .sinkhorn import sinkhorn


def sinkhorn_divergence(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    **options,
) -> float:
    """S_eps between the weighted clouds (x, a) and (y, b), mm^2.

    Args:
        x: (N, D), y: (M, D) points, mm, one frame; a: (N,), b: (M,) weights (default
            uniform).
        options: keyword arguments of :func:`otreg.ot.sinkhorn` (``blur`` required; ``reach``
            for unbalanced OT, where each term is the dual value of
            :attr:`OTSolution.dual`).

    Three solves: (x, y), (x, x) and (y, y), each on the solver :func:`sinkhorn` picks.
    """
    cross = sinkhorn(x, y, a, b, **options).dual
    self_x = sinkhorn(x, x, a, a, **options).dual
    self_y = sinkhorn(y, y, b, b, **options).dual
    return cross - (self_x + self_y) / 2
