"""Registration accuracy on real lungs (DIR-LAB 4DCT cases 1-5, 300 expert landmarks each) and
on the synthetic sample pair (80 bifurcations with known motion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import otreg
from otreg.io import read_landmarks
from otreg.metrics import target_registration_error

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
SPACING = {1: (0.97, 0.97, 2.5), 2: (1.16, 1.16, 2.5), 3: (1.15, 1.15, 2.5), 4: (1.13, 1.13, 2.5), 5: (1.10, 1.10, 2.5)}


@pytest.fixture(scope="module")
def tre_after(shared_data):
    folder = shared_data / "dirlab4dct"
    results = {}
    for case, spacing in SPACING.items():
        source = otreg.load(folder / f"case{case}_exhale_points.vtk")
        target = otreg.load(folder / f"case{case}_inhale_points.vtk")
        # the diffeomorphic model: as accurate as the Gaussian one here (1.272 vs 1.273 mm), and
        # the bar is no folding with it
        result = otreg.register(source, target, otreg.load_config("lung_points", ["smooth.model=svf"]))
        exhale = read_landmarks(folder / f"case{case}_300_T50_xyz.txt", "dirlab", spacing)
        inhale = read_landmarks(folder / f"case{case}_300_T00_xyz.txt", "dirlab", spacing)
        results[case] = (
            target_registration_error(exhale, inhale).mean(),
            target_registration_error(result.transform(exhale), inhale).mean(),
            result.metrics["jacobian"]["min"],
        )
    return results


#: BCPD's mean TRE per case (the issue's table: Hirose's C implementation, tuned)
BCPD = {1: 1.07, 2: 1.06, 3: 1.34, 4: 1.81, 5: 1.92}
#: measured with the lung_points preset and the svf model (2-core CPU)
MEASURED = {1: 1.06, 2: 0.96, 3: 1.22, 4: 1.59, 5: 1.54}


@pytest.mark.realdata
@pytest.mark.slow
def test_mean_tre_over_the_five_cases(tre_after):
    before = np.mean([b for b, _, _ in tre_after.values()])
    after = np.mean([a for _, a, _ in tre_after.values()])
    assert 6.0 < before < 7.0  # the data README's 6.5 mm: the landmarks are read right
    assert after < 1.30  # measured 1.272 mm (BCPD 1.44, true correspondences + 5 mm Gaussian 1.19)


@pytest.mark.realdata
@pytest.mark.slow
def test_every_case_near_its_measured_tre_and_none_folds(tre_after):
    for case, (before, after, min_det) in tre_after.items():
        # BCPD + 0.02: case 1 beats BCPD by only 0.01 mm (1.06 vs 1.07)
        assert after < min(MEASURED[case] + 0.05, BCPD[case] + 0.02), f"case {case}: {before:.2f} -> {after:.2f} mm"
        assert min_det > 0, f"case {case}: the svf map folds (min det {min_det:.3f})"


@pytest.fixture(scope="module")
def sample_pair():
    return (otreg.load(SAMPLE / "exhale_vessels.vtk"), otreg.load(SAMPLE / "inhale_vessels.vtk"),
            np.loadtxt(SAMPLE / "exhale_landmarks.txt"), np.loadtxt(SAMPLE / "inhale_landmarks.txt"))


@pytest.mark.slow
def test_sample_pair_tre(sample_pair):
    """lung_vessels preset on the synthetic pair: measured mean 0.79 mm, p95 1.62 mm (no folding,
    min det 0.38); CPD (pycpd, best of a small grid) 0.83 mm, two plain rounds 2.70 mm."""
    source, target, exhale, inhale = sample_pair
    result = otreg.register(source, target, otreg.load_config("lung_vessels", ["output.jacobian=false"]))
    error = target_registration_error(result.transform(exhale), inhale)
    assert error.mean() < 0.9 and np.percentile(error, 95) < 1.9
