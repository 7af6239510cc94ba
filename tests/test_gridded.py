"""Wide kernel averages through a grid (otreg.transforms.gridded): close to the exact average,
chosen only where they cost less, exact where the grid has no weight."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from otreg.transforms.field import KernelField  # noqa: E402
from otreg.transforms.gridded import field_at, gridded_average, pays  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _tree_like(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) points along random segments in a 150 mm box (a vessel-tree-like cloud)."""
    rng = np.random.default_rng(seed)
    starts = rng.uniform(0, 150, (n // 50, 3))
    ends = starts + rng.normal(0, 20, starts.shape)
    t = rng.uniform(0, 1, (n // 50, 50, 1))
    points = starts[:, None] + t * (ends - starts)[:, None]
    return points.reshape(-1, 3) + rng.normal(0, 0.5, (len(starts) * 50, 3))


def _matches(points: np.ndarray, seed: int = 1):
    """A breathing-like displacement (mm) with 1 mm of match noise, a confidence column, and
    weights with some zeros (unmatched points)."""
    rng = np.random.default_rng(seed)
    motion = np.column_stack(
        [
            3 * np.sin(points[:, 1] / 60),
            2 * np.cos(points[:, 0] / 50),
            15 * (points[:, 2] / 200) ** 2,
        ]
    )
    values = np.column_stack(
        [motion + rng.normal(0, 1.0, points.shape), rng.uniform(0, 1, len(points))]
    )
    weights = rng.uniform(0.5, 1.5, len(points)) * (rng.uniform(size=len(points)) > 0.1)
    return values, weights


@pytest.mark.parametrize("sigma", [20.0, 15.0])
def test_the_grid_is_within_hundredths_of_a_millimetre_of_the_exact_average(sigma):
    points = _tree_like(10_000)
    values, weights = _matches(points)
    exact = KernelField(points, values, weights, sigma)(points)
    gridded = gridded_average(points, values, weights, sigma, points)
    error = np.linalg.norm(gridded[:, :3] - exact[:, :3], axis=1)
    assert error.max() < 0.02 and error.mean() < 0.005, (error.max(), error.mean())
    assert np.abs(gridded[:, 3] - exact[:, 3]).max() < 0.005


def test_the_grid_only_where_it_pays_and_the_rest_exact():
    dense = _tree_like(10_000)
    values, weights = _matches(dense)
    assert pays(dense, dense, 20.0, 4)  # nearly every control within reach of every point
    assert not pays(dense, dense, 5.0, 4)  # a fine grid of many nodes, few controls in reach
    sparse = dense[::20]
    assert not pays(sparse, sparse, 20.0, 4)
    field = KernelField(dense, values, weights, 5.0)
    np.testing.assert_array_equal(field_at(field, dense), field(dense))


def test_points_far_from_every_weighted_control_take_the_exact_value():
    rng = np.random.default_rng(2)
    controls = rng.uniform(0, 50, (500, 3))
    values = np.column_stack([controls[:, :1] / 10, np.ones((500, 2))])
    weights = np.ones(500)
    # 350 mm from the controls at sigma 6 mm: every Gaussian underflows
    far = np.array([[400.0, 25.0, 25.0], [25.0, 25.0, 25.0]])
    out = gridded_average(controls, values, weights, 6.0, far)
    exact = KernelField(controls, values, weights, 6.0)(far)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], exact[0])  # the nearest controls' values, as exactly
    np.testing.assert_allclose(out[1], exact[1], atol=0.01)
