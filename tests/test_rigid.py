"""Rigid step: large rotations, partial overlap, and a real CT with a known motion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from otreg.config import Config, load_config
from otreg.pointcloud import PointCloud
from otreg.stages.rigid import rigid_align
from otreg.transforms.rigid import apply_matrix, matrix_difference, weighted_procrustes


def _rotation(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _cloud(seed: int, n: int = 600) -> np.ndarray:
    """An anisotropic blob (distinct principal axes), mm."""
    return np.random.default_rng(seed).normal(size=(n, 3)) * [40.0, 25.0, 12.0]


def test_procrustes_recovers_a_similarity_exactly():
    x = _cloud(0, 50)
    m = np.eye(4)
    m[:3, :3] = 1.3 * _rotation([1, 2, 3], 70)
    m[:3, 3] = [5, -6, 7]
    got = weighted_procrustes(x, apply_matrix(m, x), np.ones(50), scale=True)
    assert np.allclose(got, m, atol=1e-10)


@pytest.mark.parametrize("axis", [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, -2, 0.5]])
def test_recovers_150_degrees_about_any_axis(axis):
    x = _cloud(1)
    truth = np.eye(4)
    truth[:3, :3] = _rotation(axis, 150)
    truth[:3, 3] = [30, -20, 10]
    y = np.random.default_rng(2).permutation(apply_matrix(truth, x))
    cfg = Config()
    result = rigid_align(
        PointCloud(x, np.ones(len(x))), PointCloud(y, np.ones(len(y))), cfg.rigid, cfg.solver
    )
    degrees, mm = matrix_difference(result.matrix, truth)
    assert degrees < 0.1
    assert mm < 0.1


def test_tolerates_partial_overlap():
    # A vessel tree whose target copy lacks its lowest quarter and has 5 % outliers.
    import otreg

    tree = otreg.load(Path(__file__).resolve().parents[1] / "sample_data" / "exhale_vessels.vtk")
    x = tree.points[np.random.default_rng(3).choice(len(tree), 3000, replace=False)]
    truth = np.eye(4)
    truth[:3, :3] = _rotation([0.3, 1, 0.2], 35)
    truth[:3, 3] = [-15, 8, 20]
    keep = x[:, 2] > np.percentile(x[:, 2], 25)
    rng = np.random.default_rng(4)
    y = apply_matrix(truth, x[keep])
    y = np.vstack([y, rng.uniform(y.min(0), y.max(0), size=(len(y) // 20, 3))])
    cfg = Config()
    result = rigid_align(
        PointCloud(x, np.ones(len(x))), PointCloud(y, np.ones(len(y))), cfg.rigid, cfg.solver
    )
    degrees, mm = matrix_difference(result.matrix, truth)
    # measured 2.9 degrees: tolerated, not yet exact (see the README's known limitations)
    assert degrees < 4.0
    assert mm < 4.0


@pytest.mark.realdata
def test_cip_chest_label_maps_recover_the_known_matrix(shared_data):
    import otreg

    folder = shared_data / "cip_chest"
    moving = otreg.load(folder / "lunglabels_moving.nii.gz")
    fixed = otreg.load(folder / "lunglabels_fixed.nii.gz")
    truth = np.loadtxt(folder / "expected_moving_to_fixed_ras.txt")
    cfg = load_config("lung_mask")
    result = rigid_align(moving, fixed, cfg.rigid, cfg.solver)
    degrees, mm = matrix_difference(result.matrix, truth)
    assert degrees < 0.02
    assert mm < 0.1


@pytest.mark.realdata
@pytest.mark.slow
def test_cip_chest_a_rigid_motion_comes_out_rigid(shared_data):
    """The default lung_mask registration of label maps whose motion is exactly rigid: the
    whole transform (rigid step and smooth field) stays on the known matrix at every voxel."""
    import otreg

    folder = shared_data / "cip_chest"
    moving = otreg.load(folder / "lunglabels_moving.nii.gz")
    fixed = otreg.load(folder / "lunglabels_fixed.nii.gz")
    truth = np.loadtxt(folder / "expected_moving_to_fixed_ras.txt")
    # the quality diagnostics (Jacobian on a grid) do not change the transform
    result = otreg.register(moving, fixed, load_config("lung_mask", ["output.jacobian=false"]))
    degrees, _ = matrix_difference(result.transform.rigid, truth)
    error = np.linalg.norm(
        result.transform(moving.points) - apply_matrix(truth, moving.points), axis=1
    )
    assert degrees <= 0.02
    assert error.mean() <= 0.1, error.mean()
    assert result.metrics["checks"]["flags"] == []


def test_extrapolated_step_repeats_the_update():
    # The rounds' extrapolation: factor 1 gives the update back; factor 2 turns twice as far
    # about the centre and moves the centre twice as far.
    from otreg.stages.rigid import _extrapolate, _step

    old = np.eye(4)
    old[:3, :3] = _rotation([1, 0, 1], 20)
    old[:3, 3] = [3, 1, -2]
    delta = np.eye(4)
    delta[:3, :3] = _rotation([0.2, 1, -0.5], 3)
    delta[:3, 3] = [0.5, -0.2, 0.1]
    center, radius = np.array([10.0, -5.0, 40.0]), 80.0
    step = _step(old, delta @ old, center, radius)
    assert np.allclose(_extrapolate(old, step, 1.0, center, radius), delta @ old, atol=1e-10)
    assert np.allclose(
        _step(old, _extrapolate(old, step, 2.0, center, radius), center, radius),
        2 * step,
        atol=1e-10,
    )
