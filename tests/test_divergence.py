"""The Sinkhorn divergence: entropic OT without its self-transport bias."""

from __future__ import annotations

import pytest
import torch

from otreg.ot import sinkhorn, sinkhorn_divergence


def _cloud(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_a_translation_costs_half_its_square():
    """OT_eps(a, a + t) = OT_eps(a, a) + |t|^2 / 2 for any eps: the bias cancels exactly."""
    x = _cloud(800, 0)
    t = torch.tensor([0.1, -0.05, 0.02], dtype=torch.float64)
    value = sinkhorn_divergence(x, x + t, blur=0.05, tol=1e-6, max_iter=2000)
    assert value == pytest.approx(float(t @ t) / 2, rel=1e-4)


@pytest.mark.parametrize("n", [1000, 2500])  # dense, then multiscale (above 250,000 pairs)
def test_debiased_cost_is_closer_to_exact_ot(n):
    """y = x + grad phi(x) with phi convex-plus-quadratic: that map is optimal (Brenier), so
    the exact OT cost is the mean of |grad phi|^2 / 2 (sampling noise left out: with
    independent samples the discrete optimum also pays for pairing different points)."""
    x = _cloud(n, 1)
    shift = 0.07 * torch.sin(3 * x)  # Jacobian diag(1 + 0.21 cos 3x) > 0: a convex potential
    exact = float((shift * shift).sum(1).mean()) / 2
    options = {"blur": 0.05, "tol": 1e-5, "max_iter": 2000}
    biased = sinkhorn(x, x + shift, **options).dual
    debiased = sinkhorn_divergence(x, x + shift, **options)
    # measured: the entropic value +390 %, the divergence within 0.07 %
    assert abs(debiased - exact) < abs(biased - exact) / 100
    assert debiased == pytest.approx(exact, rel=0.01)


def test_unbalanced_divergence_vanishes_between_equal_clouds():
    x = _cloud(600, 2)
    assert sinkhorn_divergence(x, x.clone(), blur=0.05, reach=0.3, tol=1e-6) == pytest.approx(
        0, abs=1e-9
    )
