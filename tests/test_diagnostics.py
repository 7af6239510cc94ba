"""Suspect-registration checks: they fire on pairs that cannot be registered and stay quiet on
real ones (the DIR-LAB, sample and CIP tests assert the quiet side)."""

from __future__ import annotations

import numpy as np
import pytest

import otreg
from otreg.config import ChecksConfig
from otreg.diagnostics import region_mass, suspect_checks


def _cloud(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=50, size=(n, 3)), rng.random(n) + 0.5


def test_an_unmatched_octant_is_found():
    points, weights = _cloud()
    confidence = np.full(len(points), 0.9)
    centre = weights @ points / weights.sum()
    lost = np.all(points - centre > 0, axis=1)
    confidence[lost] = 0.05
    assert region_mass(points, weights, confidence) == pytest.approx(0.05)
    checks = suspect_checks({}, points, weights, confidence, ChecksConfig())
    assert checks["matched_mass"] > 0.5
    assert [f["title"] for f in checks["flags"]] == ["A region without partner"]


def test_folding_and_a_poor_inverse_are_flagged():
    points, weights = _cloud()
    metrics = {
        "jacobian": {"min": -0.2, "folding_fraction": 0.001},
        "inverse_consistency_mm": {"p95_mm": 2.5, "max_mm": 4.0},
        "residual_before": {"mean_mm": 3.0},
        "residual_after": {"mean_mm": 3.5},
    }
    flags = suspect_checks(metrics, points, weights, np.ones(len(points)), ChecksConfig())["flags"]
    assert [(f["level"], f["title"]) for f in flags] == [
        ("bad", "Folding"),
        ("bad", "Worse than no registration"),
        ("warn", "Large inverse-consistency error"),
    ]


def test_a_well_matched_cloud_has_no_flags():
    points, weights = _cloud()
    metrics = {"jacobian": {"min": 0.6, "folding_fraction": 0.0}}
    checks = suspect_checks(metrics, points, weights, np.full(len(points), 0.95), ChecksConfig())
    assert checks["flags"] == []


def _dirlab(folder, case, phase):
    return otreg.load(folder / f"case{case}_{phase}_points.vtk")


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("broken", ["another patient", "mirrored"])
def test_a_broken_pair_is_flagged(shared_data, broken):
    folder = shared_data / "dirlab4dct"
    source = _dirlab(folder, 1, "exhale")
    if broken == "another patient":
        target = _dirlab(folder, 4, "inhale")
    else:
        target = _dirlab(folder, 1, "inhale")
        points = target.points.copy()
        points[:, 0] = 2 * points[:, 0].mean() - points[:, 0]  # left and right swapped
        target = target.with_points(points)
    result = otreg.register(
        source, target, otreg.load_config("lung_points", ["output.jacobian=false"])
    )
    checks = result.metrics["checks"]
    # measured: 22-24 % matched (the same patient: 71-72 %)
    assert checks["matched_mass"] < 0.4
    assert "Low matched mass" in [flag["title"] for flag in checks["flags"]]
