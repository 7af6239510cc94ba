"""Kernel ridge regression fields (otreg.transforms.ridge) and the smooth stage's use of them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from otreg.stages.smooth import smooth
from otreg.transforms import Transform
from otreg.transforms.field import KernelField
from otreg.transforms.ridge import GaussianKernel, RidgeField, fit_ridge
from otreg.transforms.svf import SVFField


def dense_solution(points, values, weights, sigmas, lam):
    """The same penalised least squares as fit_ridge, by a direct (KKT) solve: (K + lam W^-1)
    alpha + P c = y, P^T alpha = 0."""
    d2 = ((points[:, None] - points[None]) ** 2).sum(-1)
    kernel = np.mean([np.exp(-d2 / (2 * s * s)) for s in sigmas], axis=0)
    w = weights / weights.mean()
    design = np.column_stack([points, np.ones(len(points))])
    n = len(points)
    system = np.block([[kernel + lam * np.diag(1 / w), design], [design.T, np.zeros((4, 4))]])
    solution = np.linalg.solve(system, np.vstack([values, np.zeros((4, values.shape[1]))]))
    return solution[:n], solution[n:]


def test_gaussian_kernel_product_equals_the_dense_matrix():
    import torch

    rng = np.random.default_rng(0)
    x, y, v = rng.normal(size=(300, 3)) * 10, rng.normal(size=(250, 3)) * 10, rng.normal(size=(250, 2))
    d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
    expected = np.mean([np.exp(-d2 / (2 * s * s)) for s in (3.0, 12.0)], axis=0) @ v
    kernel = GaussianKernel(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), [3.0, 12.0])
    np.testing.assert_allclose((kernel @ torch.tensor(v, dtype=torch.float32)).numpy(), expected, atol=1e-4)


def test_fit_equals_the_direct_solve():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 60, size=(400, 3))
    values = np.column_stack([np.sin(points[:, 0] / 10), points[:, 1] ** 2 / 100, points[:, 2] * 0.1])
    values += rng.normal(0, 0.1, values.shape)
    weights = rng.uniform(0.2, 1.0, 400)
    alpha, affine = fit_ridge(points, values, weights, [8.0, 16.0], 0.5, tol=1e-6)
    expected_alpha, expected_affine = dense_solution(points, values, weights, [8.0, 16.0], 0.5)
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


def test_less_biased_than_a_kernel_average_at_the_border():
    """Where the sampling ends (the lung base), a kernel average leans towards the values
    inside; the ridge fit of the same noisy matches does not (the sample pair's error)."""
    rng = np.random.default_rng(3)
    points = rng.uniform([0, 0, 0], [80, 80, 60], size=(3000, 3))
    motion = lambda x: np.column_stack([0 * x[:, 0], 0 * x[:, 0], -25 * (1 - x[:, 2] / 250) ** 2])  # noqa: E731
    values = motion(points) + rng.normal(0, 1.0, (3000, 3))
    border = np.column_stack([rng.uniform(20, 60, (200, 2)), np.zeros(200)])  # the base, z = 0
    kernel_error = np.abs(KernelField(points, values, np.ones(3000), 7.0)(border) - motion(border)).mean()
    alpha, affine = fit_ridge(points, values, np.ones(3000), [7.0, 14.0, 28.0, 56.0], 10.0)
    ridge_error = np.abs(RidgeField(points, alpha, affine, [7.0, 14.0, 28.0, 56.0])(border) - motion(border)).mean()
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
    targets = points + np.column_stack([np.sin(points[:, 2] / 8), np.zeros(300), 0.05 * points[:, 0]])
    return points, SimpleNamespace(targets=targets, confidence=rng.uniform(0.5, 1.0, 300))


def test_smooth_stage_ridge_and_save_load(matches, tmp_path):
    points, m = matches
    field = smooth(points, np.ones(300), m, 6.0, regression="ridge", regularization=0.1, widths=[1, 2])
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
