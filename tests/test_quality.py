"""Transform quality: the Jacobian determinant (folding) and inverse consistency, in the library,
in metrics.json / report.html of ``otreg register --set smooth.model=svf`` and in ``otreg evaluate``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import SOURCE, SOURCE_LANDMARKS, TARGET, TARGET_LANDMARKS

from otreg.quality import (
    determinants_at,
    inverse_consistency,
    jacobian_determinants,
    jacobian_summary,
)
from otreg.transforms import Transform
from otreg.transforms.field import KernelField

CLOUD = np.random.default_rng(0).uniform([-50, -40, 0], [50, 40, 80], size=(300, 3))


def test_identity_and_linear_maps_have_known_determinants():
    summary = jacobian_summary(Transform(), CLOUD, 8.0)
    assert summary["min"] == pytest.approx(1, abs=1e-9) and summary["max"] == pytest.approx(
        1, abs=1e-9
    )
    assert summary["folding_fraction"] == 0 and summary["grid_spacing_mm"] == 8.0
    # the grid: the bounding box plus one spacing on each side
    assert summary["points"] == np.prod(np.ceil((np.ptp(CLOUD, 0) + 16) / 8).astype(int) + 1)

    stretch = np.diag([2.0, 1.0, 0.5, 1.0])
    stretch[:3, :3] = stretch[:3, :3] @ [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # and a rotation
    det, shape, _ = jacobian_determinants(Transform(stretch), CLOUD, 10.0)
    assert det.shape == (np.prod(shape),)
    np.testing.assert_allclose(det, 1.0, atol=1e-9)

    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])  # det -1: every grid point "folds"
    assert jacobian_summary(Transform(mirror), CLOUD, 10.0)["folding_fraction"] == 1


def test_a_folding_kernel_field_is_detected():
    """Two controls 10 mm apart pushed 20 mm past each other (sigma 3 mm): the Gaussian
    regression u_x = 20 tanh(-5 x / sigma^2) folds between them, det = 1 - 100 / sigma^2
    sech^2(5 x / sigma^2) (u_y = u_z = 0); a gentle field (1 mm each way) does not."""
    controls = np.array([[-5.0, 0, 0], [5.0, 0, 0]])
    crossing = Transform(
        fields=[KernelField(controls, [[20.0, 0, 0], [-20.0, 0, 0]], np.ones(2), 3.0)]
    )
    summary = jacobian_summary(crossing, controls, 1.0)
    assert summary["min"] < 0 and 0 < summary["folding_fraction"] < 1

    x = np.column_stack([np.linspace(-6, 6, 13), np.full(13, 2.0), np.full(13, -1.0)])
    expected = 1 - 100 / 9 / np.cosh(5 * x[:, 0] / 9) ** 2
    np.testing.assert_allclose(determinants_at(crossing, x, 0.1), expected, rtol=1e-2, atol=1e-2)
    assert summary["min"] == pytest.approx(1 - 100 / 9, rel=0.02)  # the grid passes x = 0

    gentle = Transform(fields=[KernelField(controls, [[1.0, 0, 0], [-1.0, 0, 0]], np.ones(2), 3.0)])
    summary = jacobian_summary(gentle, controls, 1.0)
    assert summary["min"] == pytest.approx(1 - 5 / 9, rel=0.02) and summary["folding_fraction"] == 0


def test_inverse_consistency_only_with_an_inverse():
    kernel = KernelField(CLOUD, np.ones((300, 3)), np.ones(300), 10.0)
    assert inverse_consistency(Transform(fields=[kernel]), CLOUD) is None
    rigid = np.eye(4)
    rigid[:3, 3] = [1, 2, 3]
    assert inverse_consistency(Transform(rigid), CLOUD)["max_mm"] < 1e-9  # no fields: exact


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def svf_registration(fast_settings, run_otreg, tmp_path_factory):
    """(OUT, parsed --json stdout) of one fast diffeomorphic registration of the sample pair."""
    out = tmp_path_factory.mktemp("svf") / "out"
    result = run_otreg(
        "register",
        str(SOURCE),
        str(TARGET),
        "-o",
        str(out),
        *fast_settings,
        "--set",
        "smooth.model=svf",
        "--json",
    )
    return out, json.loads(result.stdout)


def test_svf_registration_is_fold_free_and_invertible(svf_registration):
    out, summary = svf_registration
    metrics = json.loads((out / "metrics.json").read_text())
    jacobian = metrics["jacobian"]
    # measured: min 0.18 (the Gaussian model with the same settings folds: min -0.13 at
    # 0.12 % of the grid points)
    assert jacobian["min"] > 0 and jacobian["folding_fraction"] == 0
    assert jacobian["grid_spacing_mm"] == 16 and jacobian["points"] > 100
    assert 0.8 < jacobian["median"] < 1.2
    # measured: mean 0.022 mm, max 0.28 mm
    consistency = metrics["inverse_consistency_mm"]
    assert consistency["mean_mm"] < 0.1 and consistency["max_mm"] < 1.0
    assert summary["residual_after_mm"] < summary["residual_after_rigid_mm"]
    report = (out / "report.html").read_text()
    assert (
        "Jacobian determinant" in report
        and "<b>No flags</b>" in report
        and "Inverse consistency" in report
    )
    # the fixed -> moving field starts from exp(-v): it inverts the transform near the data
    assert metrics["dense_field"]["inverse_residual_mm"]["median"] < 0.01


def test_evaluate_reports_the_same_quality(run_otreg, svf_registration):
    out, _ = svf_registration
    metrics = json.loads((out / "metrics.json").read_text())
    result = json.loads(run_otreg("evaluate", str(out), "--json").stdout)
    assert "landmarks" not in result  # no landmarks given: quality only
    assert result["jacobian"] == metrics["jacobian"]  # same source sampling, same grid
    assert result["inverse_consistency_mm"] == metrics["inverse_consistency_mm"]

    table = run_otreg(
        "evaluate",
        str(out),
        "--source-landmarks",
        str(SOURCE_LANDMARKS),
        "--target-landmarks",
        str(TARGET_LANDMARKS),
        "--grid-spacing",
        "20",
    ).stdout
    assert "Target registration error" in table and "Jacobian determinant" in table
    words = " ".join(table.split())  # rich wraps long titles
    assert "of a 20 mm grid" in words and "Inverse consistency" in words


def test_evaluate_needs_both_landmark_files(run_otreg, svf_registration):
    out, _ = svf_registration
    result = run_otreg(
        "evaluate", str(out), "--source-landmarks", str(SOURCE_LANDMARKS), check=False
    )
    assert result.returncode == 2 and "--target-landmarks" in result.stderr
