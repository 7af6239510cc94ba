"""Kernel ridge regression fields (otreg.transforms.ridge) and the smooth stage's use of them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from otreg.stages.smooth import sliding_weights, smooth
from otreg.transforms import Transform
from otreg.transforms.field import KernelField
from otreg.transforms.ridge import GaussianKernel, RidgeField, fit_ridge
from otreg.transforms.svf import SVFField


def dense_solution(points, values, weights, sigmas, lam):
    """The same penalised least squares as fit_ridge, by a direct solve of its normal
    equations in (alpha, A) with (N, 3, 3) weight matrices W_k:
    K W (K alpha + P A - y) + lam K alpha = 0 and P^T W (K alpha + P A - y) = 0."""
    n = len(points)
    d2 = ((points[:, None] - points[None]) ** 2).sum(-1)
    kernel = np.kron(np.mean([np.exp(-d2 / (2 * s * s)) for s in sigmas], axis=0), np.eye(3))
    position = np.column_stack([points, np.ones(n)])
    design = np.einsum("kl,ij->kijl", position, np.eye(3)).reshape(3 * n, 12)  # u = A^T [x, 1]
    w = np.zeros((3 * n, 3 * n))
    for k in range(n):
        w[3 * k : 3 * k + 3, 3 * k : 3 * k + 3] = weights[k]
    basis = np.hstack([kernel, design])
    normal = basis.T @ w @ basis
    normal[: 3 * n, : 3 * n] += lam * kernel
    solution = np.linalg.lstsq(normal, basis.T @ w @ values.ravel(), rcond=None)[0]
    return solution[: 3 * n].reshape(n, 3), solution[3 * n :].reshape(3, 4).T


def test_gaussian_kernel_product_equals_the_dense_matrix():
    import torch

    rng = np.random.default_rng(0)
    x, y, v = (
        rng.normal(size=(300, 3)) * 10,
        rng.normal(size=(250, 3)) * 10,
        rng.normal(size=(250, 2)),
    )
    d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
    expected = np.mean([np.exp(-d2 / (2 * s * s)) for s in (3.0, 12.0)], axis=0) @ v
    kernel = GaussianKernel(
        torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), [3.0, 12.0]
    )
    np.testing.assert_allclose(
        (kernel @ torch.tensor(v, dtype=torch.float32)).numpy(), expected, atol=1e-4
    )


@pytest.mark.parametrize("anisotropic", [False, True])
def test_fit_equals_the_direct_solve(anisotropic):
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 60, size=(150, 3))
    values = np.column_stack(
        [np.sin(points[:, 0] / 10), points[:, 1] ** 2 / 100, points[:, 2] * 0.1]
    )
    values += rng.normal(0, 0.1, values.shape)
    weights = rng.uniform(0.2, 1.0, 150)
    if anisotropic:  # random symmetric positive definite weights
        factors = rng.normal(size=(150, 3, 3))
        weights = weights[:, None, None] * (
            factors @ factors.transpose(0, 2, 1) / 3 + 0.1 * np.eye(3)
        )
    matrices = weights if anisotropic else weights[:, None, None] * np.eye(3)
    alpha, affine = fit_ridge(points, values, weights, [8.0, 16.0], 0.5, tol=1e-6)
    expected_alpha, expected_affine = dense_solution(points, values, matrices, [8.0, 16.0], 0.5)
    assert np.abs(alpha - expected_alpha).max() < 1e-3 * np.abs(expected_alpha).max()
    z = rng.uniform(-10, 70, size=(100, 3))  # also outside the data
    field = RidgeField(points, alpha, affine, [8.0, 16.0])
    d2 = ((z[:, None] - points[None]) ** 2).sum(-1)
    kz = np.mean([np.exp(-d2 / (2 * s * s)) for s in (8.0, 16.0)], axis=0)
    expected = kz @ expected_alpha + np.column_stack([z, np.ones(100)]) @ expected_affine
    assert np.abs(field(z) - expected).max() < 2e-3


def test_an_affine_motion_is_reproduced_exactly_and_continued_far_away():
    """The affine part is not penalised: an affine motion is fitted without residual, at any
    smoothness weight, and extends beyond the data (a kernel average would repeat the nearest
    values there)."""
    rng = np.random.default_rng(2)
    points = rng.uniform(0, 50, size=(500, 3))
    matrix = np.array([[0.05, 0.0, 0.02], [0.0, -0.03, 0.0], [0.01, 0.0, 0.1]])
    motion = lambda x: x @ matrix.T + [1.0, -2.0, 3.0]  # noqa: E731
    alpha, affine = fit_ridge(points, motion(points), np.ones(500), [10.0], 100.0)
    far = rng.uniform(100, 150, size=(50, 3))
    field = RidgeField(points, alpha, affine, [10.0])
    assert np.abs(field(far) - motion(far)).max() < 1e-3
    assert np.abs(alpha).max() < 1e-3


@pytest.mark.parametrize("matrices", [False, True])
def test_a_quadratic_trend_reproduces_a_quadratic_motion_everywhere(matrices):
    """trend = "quadratic": a quadratic motion (the diaphragm's profile) is fitted without
    residual at any smoothness weight, continued far away, the same on a grid and after a
    save and load; the affine trend flattens it."""
    from otreg.transforms.on_grid import field_on_grid

    rng = np.random.default_rng(5)
    points = rng.uniform(0, 60, size=(600, 3))
    motion = lambda x: np.column_stack(  # noqa: E731
        [0.01 * x[:, 0] * x[:, 1], 1.0 + 0.002 * x[:, 1] ** 2, -25 * (1 - x[:, 2] / 250) ** 2]
    )
    weights = np.ones(600)
    if matrices:  # sliding weights: less trust along a random direction per point
        axes = np.linalg.qr(rng.normal(size=(600, 3, 3)))[0]
        weights = np.einsum("kij,j,klj->kil", axes, [1.0, 0.2, 0.05], axes)
    alpha, trend = fit_ridge(points, motion(points), weights, [10.0], 100.0, trend="quadratic")
    assert trend.shape == (10, 3) and np.abs(alpha).max() < 1e-3
    field = RidgeField(points, alpha, trend, [10.0])
    far = rng.uniform(80, 120, size=(50, 3))
    assert np.abs(field(far) - motion(far)).max() < 1e-3
    shape, affine = np.array([4, 5, 6]), np.diag([7.0, 6.0, 5.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 20.0]
    nodes = np.stack(
        np.meshgrid(
            *(affine[i, 3] + affine[i, i] * np.arange(shape[i]) for i in range(3)), indexing="ij"
        ),
        -1,
    ).reshape(-1, 3)
    on_grid = field_on_grid(field, shape, affine).reshape(-1, 3)
    assert np.abs(on_grid - motion(nodes)).max() < 1e-3
    loaded = RidgeField.from_arrays(field.to_arrays("f_"), "f_")
    assert np.abs(loaded(far) - field(far)).max() < 1e-9
    alpha, affine_only = fit_ridge(points, motion(points), weights, [10.0], 100.0)
    flattened = RidgeField(points, alpha, affine_only, [10.0])
    assert np.abs(flattened(far) - motion(far)).max() > 1.0


def test_less_biased_than_a_kernel_average_at_the_border():
    """Where the sampling ends (the lung base), a kernel average leans towards the values
    inside; the ridge fit of the same noisy matches does not (the sample pair's error)."""
    rng = np.random.default_rng(3)
    points = rng.uniform([0, 0, 0], [80, 80, 60], size=(3000, 3))
    motion = lambda x: np.column_stack([0 * x[:, 0], 0 * x[:, 0], -25 * (1 - x[:, 2] / 250) ** 2])  # noqa: E731
    values = motion(points) + rng.normal(0, 1.0, (3000, 3))
    border = np.column_stack([rng.uniform(20, 60, (200, 2)), np.zeros(200)])  # the base, z = 0
    kernel_error = np.abs(
        KernelField(points, values, np.ones(3000), 7.0)(border) - motion(border)
    ).mean()
    alpha, affine = fit_ridge(points, values, np.ones(3000), [7.0, 14.0, 28.0, 56.0], 10.0)
    ridge_error = np.abs(
        RidgeField(points, alpha, affine, [7.0, 14.0, 28.0, 56.0])(border) - motion(border)
    ).mean()
    assert ridge_error < kernel_error / 2, (ridge_error, kernel_error)


def test_zero_weights_get_no_coefficient():
    rng = np.random.default_rng(4)
    points = rng.uniform(0, 40, size=(200, 3))
    values = np.tile([1.0, 2.0, 3.0], (200, 1))
    values[:20] = 50.0  # outliers with weight 0
    weights = np.ones(200)
    weights[:20] = 0.0
    alpha, affine = fit_ridge(points, values, weights, [8.0], 1.0)
    np.testing.assert_array_equal(alpha[:20], 0.0)
    assert np.abs(RidgeField(points, alpha, affine, [8.0])(points) - [1, 2, 3]).max() < 1e-3


@pytest.fixture
def matches():
    rng = np.random.default_rng(5)
    points = rng.uniform(0, 40, size=(300, 3))
    targets = points + np.column_stack(
        [np.sin(points[:, 2] / 8), np.zeros(300), 0.05 * points[:, 0]]
    )
    return points, SimpleNamespace(targets=targets, confidence=rng.uniform(0.5, 1.0, 300))


def test_smooth_stage_ridge_and_save_load(matches, tmp_path):
    points, m = matches
    field = smooth(
        points, np.ones(300), m, 6.0, regression="ridge", regularization=0.1, widths=[1, 2]
    )
    assert isinstance(field, RidgeField) and field.sigmas == [6.0, 12.0]
    values = field(points)
    assert np.abs(values[:, :3] - (m.targets - points)).mean() < 0.1
    assert np.all((values[:, 3] >= 0.5) & (values[:, 3] <= 1.0))  # the smoothed confidence
    transform = Transform(np.eye(4), [field])
    loaded = Transform.load(transform.save(tmp_path / "transform.npz"))
    assert isinstance(loaded.fields[0], RidgeField)
    z = np.random.default_rng(6).uniform(-20, 60, size=(100, 3))
    for got, expected in zip(loaded.apply(z), transform.apply(z)):
        np.testing.assert_array_equal(got, expected)


def test_smooth_stage_svf_of_a_ridge_regression(matches):
    points, m = matches
    ridge = smooth(points, np.ones(300), m, 6.0, regression="ridge", regularization=0.1)
    svf = smooth(points, np.ones(300), m, 6.0, regression="ridge", regularization=0.1, model="svf")
    assert isinstance(svf, SVFField)
    assert np.abs(svf(points)[:, :3] - ridge(points)[:, :3]).mean() < 0.05
    with pytest.raises(ValueError, match="smooth.regression"):
        smooth(points, np.ones(300), m, 6.0, regression="spline")


def test_sliding_weights_trust_matches_across_structures():
    """Across a plane or a line: weight 1; within the plane or along the line: near 0; in a
    blob of points: 1 in every direction."""
    rng = np.random.default_rng(7)
    plane = np.column_stack([rng.uniform(-30, 30, (2000, 2)), rng.normal(0, 0.2, 2000)])
    line = np.column_stack([rng.uniform(-30, 30, 500), rng.normal(0, 0.2, (500, 2))])
    blob = rng.uniform(-30, 30, (3000, 3))
    at = np.zeros((1, 3))
    e = np.eye(3)
    w_plane = sliding_weights(at, plane, np.ones(2000), 8.0)[0]
    assert w_plane[2, 2] > 0.99 and w_plane[0, 0] < 0.05 and w_plane[1, 1] < 0.05
    w_line = sliding_weights(at, line, np.ones(500), 8.0)[0]
    assert w_line[0, 0] < 0.05 and np.allclose(w_line[1:, 1:], e[1:, 1:], atol=0.1)
    assert np.allclose(sliding_weights(at, blob, np.ones(3000), 8.0)[0], e, atol=0.15)


def test_anisotropic_fit_ignores_sliding_within_a_surface():
    """A sphere (radius 40 mm) translated by (1, 0, 2) mm, its matches slid within the surface
    by the tangential part of 3 mm along x (not an affine motion). The isotropic fit takes the
    slide in; the anisotropic one recovers the translation from the matches across the surface."""
    rng = np.random.default_rng(8)
    normals = rng.normal(size=(3000, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    points = 40 * normals
    motion = np.array([1.0, 0.0, 2.0])
    slide = 3 * (np.array([1.0, 0.0, 0.0]) - normals[:, :1] * normals)
    m = SimpleNamespace(targets=points + motion + slide, confidence=np.ones(3000))
    common = dict(regression="ridge", regularization=300, ridge_points=0)
    iso = smooth(points, np.ones(3000), m, 8.0, **common)(points)[:, :3]
    aniso = smooth(points, np.ones(3000), m, 8.0, anisotropic=True, **common)(points)[:, :3]
    assert np.linalg.norm(iso - motion, axis=1).mean() > 1.5  # measured 2.0 mm
    assert np.linalg.norm(aniso - motion, axis=1).mean() < 0.6  # measured 0.4 mm


@pytest.mark.parametrize("kind", ["ridge", "kernel", "narrow kernel"])
def test_fields_on_a_grid_axis_by_axis_equal_their_values_node_by_node(kind):
    # the svf model samples the last round's field on a grid: separable sums there
    from otreg.transforms.field import KernelField
    from otreg.transforms.itk import grid_over, grid_points
    from otreg.transforms.on_grid import field_on_grid

    rng = np.random.default_rng(3)
    points = rng.uniform([-60, -40, -50], [60, 40, 50], size=(3000, 3)) + [100.0, -20.0, 300.0]
    confidence = KernelField(points, rng.random((3000, 1)), rng.random(3000) + 0.1, 6.0)
    if kind == "ridge":
        controls = points[rng.choice(3000, 300, replace=False)]
        field = RidgeField(
            controls,
            rng.normal(size=(300, 3)),
            rng.normal(scale=0.01, size=(4, 3)),
            [5.0, 10.0, 40.0],
            extra=confidence,
        )
    elif kind == "kernel":
        field = confidence
    else:  # 1 mm: the Gaussians underflow at the far nodes, which repeat the nearest values
        field = KernelField(points[:300], rng.normal(size=(300, 3)), np.ones(300), 1.0)
    shape, affine = grid_over(points, 4.0, 30.0)  # nodes far from the data too
    on_grid = field_on_grid(field, shape, affine)
    node_by_node = field(grid_points(shape, affine)).reshape(on_grid.shape)
    np.testing.assert_allclose(on_grid, node_by_node, atol=2e-4)
