"""The multiscale solver (voxel clusters, truncated kernels) and the OT certificate."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otreg import native
from otreg.ot import sinkhorn
from otreg.ot.certificate import c_transform
from otreg.ot.hierarchy import Hierarchy
from otreg.ot.sparse import truncated_pair

ot = pytest.importorskip("ot", reason="POT (pip install pot) is the exact-OT oracle of these tests")


def _deformed_pair(n: int, seed: int, dtype=torch.float64):
    """A unit-cube cloud and an independently resampled, smoothly deformed (7 %) copy."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g, dtype=dtype)
    y = torch.rand(n, 3, generator=g, dtype=dtype)
    y = y + 0.07 * torch.stack(
        [torch.sin(3 * y[:, 1]), torch.sin(3 * y[:, 2]), torch.sin(3 * y[:, 0])], 1
    )
    return x, y


def small_sinkhorn(*args, **kw):
    """The solver with the multiscale path (and truncated cluster levels) taking problems small
    enough to check against dense solves."""
    return sinkhorn(*args, dense_pairs=10_000, **kw)


def test_hierarchy_levels_nest_and_keep_mass():
    x, _ = _deformed_pair(3000, 0)
    w = torch.rand(3000, dtype=torch.float64)
    h = Hierarchy(x, w, torch.zeros(3, dtype=torch.float64), 1.2)
    assert torch.equal(h.finest.points, x[h.order])
    coarse, fine = h.level(3), h.level(5)
    assert len(coarse) < len(fine) <= 3000
    for level in (coarse, fine):
        assert math.isclose(float(level.weights.sum()), float(w.sum()), rel_tol=1e-12)
    children = coarse.children_start(fine)
    assert children[0] == 0 and children[-1] == len(fine)
    # every fine cluster lies inside its parent's run of points
    assert torch.equal(fine.start[children], coarse.start)


@pytest.mark.parametrize("reach", [None, 0.3])
def test_multiscale_agrees_with_dense(reach):
    x, y = _deformed_pair(1500, 1)
    kw = {"blur": 0.03, "reach": reach, "tol": 1e-4, "max_iter": 2000}
    dense = small_sinkhorn(x, y, multiscale=False, **kw)
    multi = small_sinkhorn(x, y, **kw)
    assert multi.backend == "multiscale" and dense.backend != "multiscale"
    assert multi.cost == pytest.approx(dense.cost, rel=2e-3)
    assert np.abs(multi.targets - dense.targets).max() < 0.01  # 1 % of the cube, 1/3 of the blur
    assert multi.confidence.numpy() == pytest.approx(dense.confidence.numpy(), abs=2e-3)


_TRUNCATION_CASE = {"blur": 0.02, "tol": 1e-4, "max_iter": 3000}


@pytest.fixture(scope="module")
def dense_reference():
    x, y = _deformed_pair(2000, 2)
    return x, y, sinkhorn(x, y, multiscale=False, **_TRUNCATION_CASE)


@pytest.mark.parametrize("truncation", [8.0, 12.0, 16.0, 24.0])
def test_truncation_changes_the_cost_by_less_than_half_a_percent(dense_reference, truncation):
    x, y, dense = dense_reference
    multi = small_sinkhorn(x, y, truncation=truncation, **_TRUNCATION_CASE)
    assert multi.backend == "multiscale"
    assert abs(multi.cost / dense.cost - 1) < 5e-3  # measured: 1e-5 to 1e-4


def test_multiscale_float32_far_from_origin_at_blur_0_1_mm():
    # a 60 mm cloud 300 mm from the origin, as lungs are in scanner coordinates
    x, y = _deformed_pair(3000, 3, dtype=torch.float32)
    x, y = x * 60 + 300, y * 60 + 300
    s = small_sinkhorn(x, y, blur=0.1, tol=1e-3, max_iter=300)
    for t in (s.f, s.g, s.targets, s.confidence):
        assert torch.isfinite(t).all()
    assert math.isfinite(s.cost)


def test_multiscale_unbalanced_tends_to_balanced():
    x, y = _deformed_pair(1500, 4)
    balanced = small_sinkhorn(x, y, blur=0.03, tol=1e-4, max_iter=2000)
    loose = small_sinkhorn(x, y, blur=0.03, reach=100.0, tol=1e-4, max_iter=2000)
    assert loose.cost == pytest.approx(balanced.cost, rel=1e-2)
    assert loose.transported_mass == pytest.approx(1.0, abs=1e-3)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(5, 120),
    blur=st.sampled_from([0.02, 0.1, 0.5]),
    weighted=st.booleans(),
)
def test_certificate_contains_the_exact_cost(seed, n, blur, weighted):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = rng.normal(size=(n + 7, 3)) * [1.5, 1, 0.5] + 0.3
    a = rng.uniform(0.1, 1, n) if weighted else np.ones(n)
    b = rng.uniform(0.1, 1, n + 7) if weighted else np.ones(n + 7)
    a, b = a / a.sum(), b / b.sum()
    exact = float(ot.emd2(a, b, ot.dist(x, y) / 2))

    def t(v):
        return torch.tensor(v, dtype=torch.float64)

    # a loose tolerance on purpose: the bounds must hold for any potentials, converged or not
    s = sinkhorn(t(x), t(y), t(a), t(b), blur=blur, tol=1e-2, max_iter=50)
    lower, upper = s.bounds()
    assert lower <= exact * (1 + 1e-9) + 1e-12
    assert upper >= exact * (1 - 1e-9) - 1e-12


def test_certificate_is_tight_at_small_blur():
    # 500 points and a noisy copy: at blur 0.01 the bounds were 4.7 % apart (measured)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(500, 3, generator=g, dtype=torch.float64)
    y = x + 0.1 * torch.randn(500, 3, generator=g, dtype=torch.float64)
    s = sinkhorn(x, y, blur=0.01, tol=1e-4, max_iter=3000)
    lower, upper = s.bounds()
    assert (upper - lower) / lower < 0.06


needs_native = pytest.mark.skipif(
    not native.available(), reason="otreg's compiled kernels are not built (pip install -e .)"
)


def _tree_pair(n: int, seed: int):
    """A vessel-like cloud (points along 64 random segments from a trunk, 0.3 % noise) and an
    independently resampled copy deformed by 7 % of its diameter: the clouds on which the
    truncated solver once stalled (marginal error 9e-2) and diverged."""
    g = torch.Generator().manual_seed(seed)

    def sample():
        seg = torch.randint(0, 64, (n,), generator=g)
        t = torch.rand(n, 1, generator=g)
        return starts[seg] + t * (ends[seg] - starts[seg]) + 0.003 * torch.randn(n, 3, generator=g)

    ends = torch.rand(64, 3, generator=g)
    starts = torch.cat([torch.full((1, 3), 0.5), ends[:-1]])[
        torch.randint(0, 64, (64,), generator=g)
    ]
    x, y = sample(), sample()
    return x, y + 0.07 * torch.sin(3 * y[:, [1, 2, 0]])


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_truncated_kernels_keep_every_entry_near_each_row_max_on_one_support(dtype):
    """The branch and bound against brute force: for any potentials, each row of x keeps ALL
    columns within the truncation of its max (and the rows of y likewise), and both kernels
    hold the union of the two, as transposes."""
    x, y = _tree_pair(700, 5)
    x, y = x.to(dtype), y.to(dtype)
    g = torch.Generator().manual_seed(6)
    f = torch.randn(700, generator=g, dtype=dtype) * 0.01
    gy = torch.randn(700, generator=g, dtype=dtype) * 0.01 + 0.2 * y[:, 0]  # far from converged
    log_w = torch.full((700,), -math.log(700), dtype=dtype)
    eps, truncation = 0.02**2, 6.0
    kxy, kyx = truncated_pair(x, y, log_w, log_w, None, f, gy, eps, truncation)

    def dense(kernel):
        return (
            torch.sparse_csr_tensor(
                kernel.crow, kernel.col, torch.ones(kernel.nnz, dtype=dtype), (700, 700)
            )
            .to_dense()
            .bool()
        )

    support = dense(kxy)
    assert torch.equal(support, dense(kyx).T)
    cost = torch.cdist(x.double(), y.double()) ** 2 / 2
    for z, kept in (
        ((gy.double()[None, :] - cost) / eps, support),
        (((f.double()[:, None] - cost) / eps).T, support.T),
    ):
        needed = z >= z.amax(1, keepdim=True) - truncation + 1e-3  # float32: not at the edge
        assert bool((kept | ~needed).all()), f"{int((needed & ~kept).sum())} entries missed"
    assert support.sum() < 0.2 * support.numel()  # and it is sparse


@needs_native
def test_vessel_like_trees_converge():
    x, y = _tree_pair(1500, 7)
    kw = {"blur": 0.017, "tol": 1e-3, "max_iter": 500}
    multi = small_sinkhorn(x, y, **kw)
    dense = small_sinkhorn(x, y, multiscale=False, **kw)
    assert multi.backend == "multiscale" and multi.marginal_error < 1e-3
    assert multi.cost == pytest.approx(dense.cost, rel=5e-3)


@needs_native
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_certificate_of_a_truncated_plan_contains_the_exact_cost(seed):
    x, y = _tree_pair(1500, seed) if seed == 2 else _deformed_pair(1500, seed, torch.float32)
    s = small_sinkhorn(x, y, blur=0.02, tol=1e-3, max_iter=500)
    assert s.plan.truncated is not None  # the rounded plan is the truncated one
    a = np.full(1500, 1 / 1500)
    exact = float(
        ot.emd2(a, a, ot.dist(x.double().numpy(), y.double().numpy()) / 2, numItermax=10**7)
    )
    lower, upper = s.bounds()
    assert lower <= exact * (1 + 1e-9) and upper >= exact * (1 - 1e-9)
    assert (upper - lower) / exact < 0.1


@needs_native
def test_compiled_c_transform_is_exact():
    x, y = _tree_pair(500, 3)
    x, y = x.double(), y.double()
    g = torch.randn(500, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.05
    brute = (torch.cdist(x, y) ** 2 / 2 - g[None, :]).amin(1)
    assert torch.allclose(c_transform(x, y, g), brute, rtol=0, atol=1e-12)


def test_without_compiled_kernels_every_level_is_dense(monkeypatch):
    x, y = _deformed_pair(1000, 1)
    kw = {"blur": 0.03, "tol": 1e-4, "max_iter": 2000}
    reference = small_sinkhorn(x, y, **kw)
    monkeypatch.setattr(native, "load", lambda: None)
    fallback = small_sinkhorn(x, y, **kw)
    assert fallback.backend == "multiscale" and fallback.plan.truncated is None
    assert fallback.cost == pytest.approx(reference.cost, rel=2e-3)


@pytest.mark.xdist_group("keops")  # pytest -n: one worker compiles the KeOps formulas
def test_the_gpu_code_path_on_the_cpu(monkeypatch):
    """On CUDA the compiled kernels do not run: every level takes KeOps kernels. The same path,
    forced on the CPU, agrees with the truncated one (no GPU was lent to check it on one)."""
    pytest.importorskip("pykeops")
    x, y = _deformed_pair(800, 8, torch.float32)
    kw = {"blur": 0.03, "tol": 1e-3, "max_iter": 1000}
    reference = small_sinkhorn(x, y, **kw)
    monkeypatch.setattr(native, "load", lambda: None)
    keops = small_sinkhorn(x, y, backend="keops", **kw)
    assert keops.backend == "multiscale" and keops.plan.truncated is None
    assert keops.cost == pytest.approx(reference.cost, rel=2e-3)
    assert torch.allclose(keops.targets, reference.targets, atol=2e-3)


@needs_native
def test_feature_columns_take_part_in_the_truncated_kernels():
    """Points with a scaled feature column (e.g. vessel radius, D = 4): the multiscale solve
    agrees with the dense one, and the feature changes the plan."""
    x, y = _deformed_pair(1200, 9)
    g = torch.Generator().manual_seed(9)
    fx, fy = (
        torch.rand(1200, 1, generator=g, dtype=x.dtype),
        torch.rand(1200, 1, generator=g, dtype=x.dtype),
    )
    kw = {"blur": 0.03, "tol": 1e-4, "max_iter": 2000}
    multi = small_sinkhorn(torch.cat([x, 0.2 * fx], 1), torch.cat([y, 0.2 * fy], 1), **kw)
    dense = small_sinkhorn(
        torch.cat([x, 0.2 * fx], 1), torch.cat([y, 0.2 * fy], 1), multiscale=False, **kw
    )
    plain = small_sinkhorn(x, y, **kw)
    assert multi.backend == "multiscale" and multi.cost == pytest.approx(dense.cost, rel=2e-3)
    assert multi.cost > 1.2 * plain.cost  # the feature term adds to the cost


@needs_native
def test_points_denser_than_the_blur_are_solved_on_clusters():
    """A tree of 3,000 points at blur 0.04 (a few points per cluster of side < blur): the final
    blur runs on clusters and the points are matched to them. Its bounds still contain the
    exact cost, its lower bound stays near it, and its plan agrees with the one solved between
    the points."""
    x, y = (t.double() for t in _tree_pair(3000, 4))
    kw = {"blur": 0.04, "tol": 1e-3, "max_iter": 1000}
    clustered = small_sinkhorn(x, y, **kw)
    columns = clustered.plan.truncated.columns
    assert columns.spread is not None and len(columns.points) < 1500
    points = small_sinkhorn(x, y, cluster_final_blur=False, **kw)
    assert points.plan.truncated.columns.spread is None

    a = np.full(3000, 1 / 3000)
    exact = float(ot.emd2(a, a, ot.dist(x.numpy(), y.numpy()) / 2, numItermax=10**7))
    lower, upper = clustered.bounds()
    assert lower <= exact * (1 + 1e-9) and upper >= exact * (1 - 1e-9)
    assert lower >= points.bounds()[0] - 0.002 * exact
    assert clustered.cost == pytest.approx(points.cost, rel=0.01)
    assert clustered.f.shape == (3000,) and clustered.g.shape == (3000,)
    assert (clustered.targets - points.targets).norm(dim=1).mean() < 0.1 * kw["blur"]


@needs_native
@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_target_clusters_that_no_point_reaches_keep_finite_potentials(kernels):
    """Unbalanced, with part of the target far from every source point: the points are matched
    to the target's clusters by the rows of the points alone, which keep no entry of the far
    clusters; their g-update was then infinite ("Sinkhorn diverged", as on a lobe surface onto
    its target cut in half). The far clusters' own rows are added, and the solve agrees with
    the dense one."""
    x, y = (t.double() for t in _tree_pair(3000, 4))
    far = y[y[:, 2] < 0.3] + torch.tensor([0.0, 0.0, -1.5], dtype=y.dtype)
    y = torch.cat([y, far])
    kw = {"blur": 0.04, "reach": 0.2, "tol": 1e-3, "max_iter": 1000}
    clustered = small_sinkhorn(x, y, kernels=kernels, **kw)
    assert clustered.plan.truncated.columns.spread is not None  # points matched to clusters
    dense = small_sinkhorn(x, y, multiscale=False, **kw)
    assert clustered.cost == pytest.approx(dense.cost, rel=0.03)
    assert (clustered.targets - dense.targets).norm(dim=1).mean() < 0.05 * kw["blur"]


@needs_native
def test_certificate_of_a_truncated_plan_holds_for_potentials_far_off():
    """Bounds hold for any potentials: f raised by 200 eps puts the plan's entries near e^200
    (past float's range), and the rounded plan must still be a finite plan."""
    x, y = _deformed_pair(1500, 3, torch.float32)
    s = small_sinkhorn(x, y, blur=0.02, tol=1e-3, max_iter=500)
    xs, ys, a, b = s.plan.x, s.plan.y, s.plan.a, s.plan.b
    exact = float(
        ot.emd2(
            a.double().numpy(),
            b.double().numpy(),
            ot.dist(xs.double().numpy(), ys.double().numpy()) / 2,
            numItermax=10**7,
        )
    )
    lower, upper = replace(s.plan, f=s.plan.f + 200 * s.eps).bounds()
    assert math.isfinite(upper) and upper >= exact * (1 - 1e-9)
    assert lower <= exact * (1 + 1e-9)


# The options reach every stage of the multiscale path: the clusters at the final blur, then the
# points matched to them (a tree of 3,000 points at blur 0.04: a few points per cluster).
_CLUSTERED = {"blur": 0.04, "tol": 1e-3, "max_iter": 1000}


@pytest.fixture(scope="module")
def clustered_tree():
    return tuple(t.double() for t in _tree_pair(3000, 4))


@needs_native
@pytest.mark.parametrize("cluster_final_blur", [True, False])
@pytest.mark.parametrize("max_iter", [1, 5])
def test_max_iter_bounds_the_final_iterations_on_the_multiscale_path(
    clustered_tree, caplog, cluster_final_blur, max_iter
):
    x, y = clustered_tree
    kw = {**_CLUSTERED, "cluster_final_blur": cluster_final_blur}
    converged = small_sinkhorn(x, y, **kw)
    assert converged.backend == "multiscale" and converged.marginal_error < kw["tol"]
    assert (converged.plan.truncated.columns.spread is not None) == cluster_final_blur
    assert converged.final_iterations > max_iter  # so that the cut below is a real one
    with caplog.at_level(logging.WARNING, logger="otreg.ot"):
        cut = small_sinkhorn(x, y, **{**kw, "max_iter": max_iter})
    assert cut.final_iterations <= max_iter
    assert cut.marginal_error > kw["tol"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "max_iter" in warnings[0].getMessage()


@needs_native
def test_tol_takes_effect_on_the_multiscale_path(clustered_tree):
    x, y = clustered_tree
    loose = small_sinkhorn(x, y, **{**_CLUSTERED, "tol": 3e-2})
    tight = small_sinkhorn(x, y, **{**_CLUSTERED, "tol": 1e-5, "max_iter": 5000})
    assert loose.backend == tight.backend == "multiscale"
    assert tight.marginal_error < 1e-5 < loose.marginal_error < 3e-2
    assert tight.final_iterations > loose.final_iterations


@needs_native
def test_overrelaxation_takes_effect_on_the_multiscale_path(clustered_tree):
    x, y = clustered_tree
    kw = {**_CLUSTERED, "tol": 1e-5, "max_iter": 5000}
    plain = small_sinkhorn(x, y, overrelaxation=1.0, **kw)
    relaxed = small_sinkhorn(x, y, overrelaxation=1.8, **kw)
    assert plain.marginal_error < 1e-5 and relaxed.marginal_error < 1e-5
    assert relaxed.final_iterations < plain.final_iterations
    assert relaxed.cost == pytest.approx(plain.cost, rel=1e-3)


@needs_native
def test_a_start_that_does_not_converge_in_time_is_given_up_for_the_annealing(monkeypatch):
    """init_iterations: potentials far from this problem's do not converge within the budget;
    the solve then anneals as without them and ends where that ends. Without a budget the
    start is kept (the rigid step's use)."""
    from otreg.ot import multiscale

    x, y = _deformed_pair(600, 3)
    kw = {"blur": 0.02, "reach": 0.5, "tol": 1e-4}
    cold = small_sinkhorn(x, y, **kw)
    far = (torch.rand(600, dtype=torch.float64) * 0.5, torch.zeros(600, dtype=torch.float64))
    solves = []
    solve = multiscale.solve
    monkeypatch.setattr(multiscale, "solve", lambda *a, **k: solves.append(1) or solve(*a, **k))
    given_up = small_sinkhorn(x, y, init=far, init_iterations=3, **kw)
    assert solves == [1] and given_up.marginal_error < 1e-4
    assert (given_up.targets - cold.targets).abs().max() < 1e-3
    kept = small_sinkhorn(x, y, init=far, max_iter=3, **kw)
    assert solves == [1] and kept.marginal_error > 1e-4
    # a start from converged potentials converges within the budget: no annealing
    warm = small_sinkhorn(x, y, init=(cold.f, cold.g), init_iterations=3, **kw)
    assert solves == [1] and warm.marginal_error < 1e-4


@needs_native
def test_a_start_is_tried_only_where_the_annealing_ends_on_the_points(monkeypatch):
    """Where the final blur's clusters merge the points (dense clouds), a start from given
    potentials would iterate on kernels between the points, far larger than the annealing's:
    with init_iterations the solve anneals instead (a 300,000-point tree ran out of memory)."""
    from otreg.ot import multiscale
    from otreg.ot.iterate import Problem
    from otreg.ot.options import SolverOptions

    x, y = _deformed_pair(10_000, 4)
    uniform = torch.full((10_000,), 1 / 10_000, dtype=torch.float64)
    problem, options = Problem(uniform, uniform, 1.0), SolverOptions()
    # blur 0.15: 512 clusters of side 0.07-0.15 (about 20 points each); blur 0.005: one each
    assert not multiscale.ends_on_points(x, y, problem, 0.15**2, options)
    assert multiscale.ends_on_points(x, y, problem, 0.005**2, options)
    kw = {"blur": 0.15, "reach": 1.0}
    cold = sinkhorn(x, y, **kw)
    starts = []
    warm_start = multiscale.warm_start
    monkeypatch.setattr(
        multiscale, "warm_start", lambda *a, **k: starts.append(1) or warm_start(*a, **k)
    )
    again = sinkhorn(x, y, init=(cold.f, cold.g), init_iterations=100, **kw)
    assert starts == [] and again.marginal_error < 1e-3
    sinkhorn(x, y, init=(cold.f, cold.g), **kw)  # without a budget: the start is kept
    assert starts == [1]
