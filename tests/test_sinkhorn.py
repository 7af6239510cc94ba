"""The Sinkhorn solver against POT's exact OT, its limits and its backends."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

ot = pytest.importorskip("ot", reason="POT (pip install pot) is the exact-OT oracle of these tests")

from otreg.config import SolverConfig  # noqa: E402 (after the oracle's skip)
from otreg.errors import SolverError  # noqa: E402
from otreg.ot import SolverOptions, blur_schedule, sinkhorn  # noqa: E402
from otreg.stages.match import match  # noqa: E402


def _pair(seed: int, n: int = 300, m: int = 280, shift: float = 0.5):
    """A random anisotropic cloud and a noisy, shifted, partly missing copy (not in order)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [3.0, 2.0, 1.0]
    y = x + rng.normal(size=(n, 3)) * 0.3 + [shift, 0, 0]
    y = rng.permutation(y)[:m]
    return x, y


def _exact(x, y) -> float:
    return float(
        ot.emd2(np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y)), ot.dist(x, y) / 2)
    )


def _solve(x, y, dtype=torch.float64, **kw):
    return sinkhorn(torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype), **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("blur", [0.3, 0.1])
def test_cost_within_entropic_bias_of_exact(seed, blur):
    # For the entropic plan P: OT_0 <= <P, C> <= OT_0 + eps * KL(P0 | a x b) <= OT_0 + eps log N
    # (exact marginals); the tolerance adds what a 1e-5 marginal error can move.
    x, y = _pair(seed)
    exact = _exact(x, y)
    sol = _solve(x, y, blur=blur, tol=1e-5, max_iter=20000)
    assert sol.marginal_error < 1e-4  # measured 1.6e-5 at most: the bounds below hold to 1e-4
    bias = blur**2 * math.log(len(y))
    assert exact - 1e-3 * exact <= sol.cost <= exact + bias
    # the cost converges to the exact one as the blur shrinks (Weed 2018)
    assert abs(sol.cost - exact) / exact < (0.15 if blur == 0.3 else 0.01)


def test_unbalanced_tends_to_balanced_as_reach_grows():
    x, y = _pair(3)
    balanced = _solve(x, y, blur=0.2, tol=1e-6, max_iter=20000)
    previous = math.inf
    for reach in (1.0, 10.0, 100.0, 1000.0):
        sol = _solve(x, y, blur=0.2, reach=reach, tol=1e-6, max_iter=20000)
        gap = abs(sol.cost - balanced.cost)
        assert gap <= previous + 1e-9
        previous = gap
    assert previous / balanced.cost < 1e-3
    assert abs(sol.transported_mass - 1) < 1e-3
    assert torch.allclose(sol.targets, balanced.targets, atol=1e-2)


@pytest.mark.parametrize("reach", [10.0, 100.0, 1000.0])
def test_unbalanced_converges_whatever_the_reach(reach):
    # the damped updates shrink the potentials' common translation by only (1 + eps/rho)^-2 per
    # iteration: without the translation step reach 100 (eps/rho = 4e-6) stopped at max_iter,
    # 20,000 iterations, with a marginal error of 7e-6; measured with it: 657 (1,242 and 653 for
    # reach 10 and 1000, as balanced OT's 653)
    x, y = _pair(3)
    sol = _solve(x, y, blur=0.2, reach=reach, tol=1e-6, max_iter=20000)
    assert sol.marginal_error < 1e-6 and sol.iterations < 2500


def test_unbalanced_leaves_outliers_unmatched():
    x, y = _pair(4, n=200, m=200, shift=0.0)
    x = np.vstack([x, np.full((10, 3), 40.0)])  # 10 source points with no counterpart
    sol = _solve(x, y, blur=0.3, reach=2.0, tol=1e-5, max_iter=5000)
    conf = sol.confidence.numpy()
    assert conf[-10:].max() < 0.05
    assert np.median(conf[:-10]) > 0.5


def test_matches_are_the_permutation_for_a_shuffled_copy():
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 100, size=(200, 3))
    perm = rng.permutation(200)
    sol = _solve(x, x[perm], blur=0.5, tol=1e-6, max_iter=5000)
    assert np.abs(sol.targets.numpy() - x).max() < 1e-2  # mm; points ~10 mm apart, blur 0.5
    assert sol.cost < 1e-2


@pytest.mark.xdist_group("keops")  # pytest -n: one worker compiles the KeOps formulas
def test_torch_and_keops_backends_agree():
    pytest.importorskip("pykeops")
    x, y = _pair(6, n=150, m=140)
    a = _solve(x, y, dtype=torch.float32, blur=0.3, backend="torch", tol=1e-4, max_iter=2000)
    b = _solve(x, y, dtype=torch.float32, blur=0.3, backend="keops", tol=1e-4, max_iter=2000)
    assert b.backend == "keops"
    assert abs(a.cost - b.cost) / a.cost < 1e-3
    assert torch.allclose(a.targets, b.targets, atol=1e-3)


def test_float32_far_from_origin_and_small_blur_stays_finite():
    # Lungs sit ~300 mm from the scanner origin; blur 0.1 mm: eps = 0.01 mm^2.
    x, y = _pair(7, n=200, m=200)
    x, y = x * 20 + 300.0, y * 20 + 300.0
    sol = _solve(x, y, dtype=torch.float32, blur=0.1, tol=1e-3, max_iter=300)
    for t in (sol.f, sol.g, sol.targets, sol.confidence):
        assert torch.isfinite(t).all()
    assert math.isfinite(sol.cost)


def test_weights_and_errors():
    x, y = _pair(8, n=50, m=40)
    with pytest.raises(SolverError, match="equal masses"):
        _solve(x, y, a=torch.ones(50, dtype=torch.float64), blur=1.0)
    with pytest.raises(SolverError, match="blur"):
        _solve(x, y, blur=0.0)


def test_blur_schedule():
    s = blur_schedule(100.0, 1.0, 0.5)
    assert s[0] == 100.0 and s[-1] == 1.0
    assert all(b2 < b1 for b1, b2 in itertools.pairwise(s))
    assert blur_schedule(1.0, 2.0, 0.5) == [2.0]


def test_solver_options_carry_every_config_field():
    config = SolverConfig(
        backend="torch",
        scaling=0.7,
        tol=2e-4,
        max_iter=7,
        overrelaxation=1.3,
        dtype="float64",
        multiscale=False,
        truncation=9.0,
    )
    options = SolverOptions.from_config(config)
    for name, value in config.model_dump().items():
        assert getattr(options, name) == value
    with pytest.raises(SolverError, match="overrelaxation"):
        SolverOptions(overrelaxation=2.5)
    with pytest.raises(SolverError, match="max_iter"):
        _solve(*_pair(0, n=30, m=30), blur=1.0, max_iter=0)


@pytest.mark.parametrize("multiscale", [True, False])
def test_the_matching_stage_honours_the_solver_config(multiscale):
    """The config's solver section reaches the solver on the path the problem takes (1,000 x
    1,000 points: multiscale unless switched off): dtype, max_iter and tol."""
    x, y = _pair(9, n=1000, m=1000)
    w = np.ones(1000)
    common = {"blur": 0.3, "reach": None}
    config = SolverConfig(dtype="float64", max_iter=2, tol=1e-4, multiscale=multiscale)
    cut = match(x, w, y, w, solver=config, **common).solution
    assert cut.backend == ("multiscale" if multiscale else "torch")
    assert cut.f.dtype == torch.float64
    assert cut.final_iterations <= 2 and cut.marginal_error > 1e-4
    full = match(x, w, y, w, solver=config.model_copy(update={"max_iter": 5000}), **common)
    assert full.solution.marginal_error < 1e-4 and full.solution.final_iterations > 2


def test_transported_mass_is_the_moved_fraction_of_the_source_mass():
    """On a weighted cloud: 100 light source points beside the target take more than their own
    mass (confidence > 1), 10 heavy ones far away take none. The transported mass is the plan's
    total mass over the source mass (computed here from the potentials), not the mean
    confidence (which the light points dominate)."""
    rng = np.random.default_rng(11)
    near = rng.normal(size=(100, 3))
    far = rng.normal(size=(10, 3)) + 30.0
    x = torch.tensor(np.vstack([near, far]))
    y = torch.tensor(near + rng.normal(size=(100, 3)) * 0.2)
    a = torch.tensor(np.r_[np.full(100, 0.5 / 100), np.full(10, 0.5 / 10)])
    b = torch.full((100,), 1 / 100, dtype=torch.float64)
    blur, reach = 0.5, 3.0
    sol = sinkhorn(x, y, a, b, blur=blur, reach=reach, tol=1e-8, max_iter=5000)
    eps = blur**2
    cost = torch.cdist(x, y) ** 2 / 2
    plan = a[:, None] * b[None, :] * ((sol.f[:, None] + sol.g[None, :] - cost) / eps).exp()
    moved = float(plan.sum() / a.sum())
    assert sol.transported_mass == pytest.approx(moved, rel=1e-6)
    assert float(sol.confidence[100:].max()) < 1e-3  # the far half of the mass stays
    assert 0.5 < sol.transported_mass < 0.75
    assert float(sol.confidence.mean()) > 1.1  # what the unweighted mean would have said
