"""Registration accuracy on real lungs (DIR-LAB 4DCT cases 1-5, 300 expert landmarks each) and
on the synthetic sample pair (80 bifurcations with known motion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import otreg
from otreg.io import read_landmarks
from otreg.metrics import target_registration_error
from otreg.presets import preset_for

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
SPACING = {
    1: (0.97, 0.97, 2.5),
    2: (1.16, 1.16, 2.5),
    3: (1.15, 1.15, 2.5),
    4: (1.13, 1.13, 2.5),
    5: (1.10, 1.10, 2.5),
}


@pytest.fixture(scope="module")
def tre_after(shared_data):
    folder = shared_data / "dirlab4dct"
    results = {}
    for case, spacing in SPACING.items():
        # untagged files in the frame of the DIR-LAB landmarks (voxel-aligned): read as-is
        source = otreg.load(folder / f"case{case}_exhale_points.vtk", mesh_frame="ras")
        target = otreg.load(folder / f"case{case}_inhale_points.vtk", mesh_frame="ras")
        # the diffeomorphic model: as accurate as the displacement one here (1.249 vs 1.254 mm),
        # and the bar is no folding with it
        result = otreg.register(
            source, target, otreg.load_config("lung_points", ["smooth.model=svf"])
        )
        exhale = read_landmarks(folder / f"case{case}_300_T50_xyz.txt", "dirlab", spacing)
        inhale = read_landmarks(folder / f"case{case}_300_T00_xyz.txt", "dirlab", spacing)
        results[case] = (
            target_registration_error(exhale, inhale).mean(),
            target_registration_error(result.transform(exhale), inhale).mean(),
            result.metrics["jacobian"]["min"],
            result.metrics["checks"]["flags"],
        )
    return results


#: BCPD's mean TRE per case (the issue's table: Hirose's C implementation, tuned)
BCPD = {1: 1.07, 2: 1.06, 3: 1.34, 4: 1.81, 5: 1.92}
#: measured with the lung_points preset (ridge last round) and the svf model (one CPU thread);
#: with its quadratic trend 1.046, 0.953, 1.198, 1.514, 1.479 (case 1 keeps its older, lower bar)
MEASURED = {1: 1.03, 2: 0.95, 3: 1.20, 4: 1.51, 5: 1.48}


@pytest.mark.realdata
@pytest.mark.slow
def test_mean_tre_over_the_five_cases(tre_after):
    before = np.mean([b for b, _, _, _ in tre_after.values()])
    after = np.mean([a for _, a, _, _ in tre_after.values()])
    assert 6.0 < before < 7.0  # the data README's 6.5 mm: the landmarks are read right
    assert after < 1.26  # measured 1.238 mm (BCPD 1.44, true correspondences + 5 mm Gaussian 1.19)


@pytest.mark.realdata
@pytest.mark.slow
def test_every_case_near_its_measured_tre_and_none_folds(tre_after):
    for case, (before, after, min_det, flags) in tre_after.items():
        assert after < min(MEASURED[case] + 0.03, BCPD[case]), (
            f"case {case}: {before:.2f} -> {after:.2f} mm"
        )
        # measured 0.81-0.92: the ridge fit compresses far less than kernel averages (0.11-0.34)
        assert min_det > 0.5, f"case {case}: the svf map nearly folds (min det {min_det:.3f})"
        assert flags == [], f"case {case}: flagged as suspect: {flags}"


@pytest.fixture(scope="module")
def sample_pair():
    return (
        otreg.load(SAMPLE / "exhale_vessels.vtk"),
        otreg.load(SAMPLE / "inhale_vessels.vtk"),
        np.loadtxt(SAMPLE / "exhale_landmarks.txt"),
        np.loadtxt(SAMPLE / "inhale_landmarks.txt"),
    )


@pytest.mark.slow
def test_sample_pair_tre(sample_pair):
    """lung_vessels preset (svf) on the synthetic pair: measured mean 0.284 mm, p95 0.75 mm (the
    issue's bar: 0.35 / 1.0 mm); with an affine trend and lambda 10 0.46 / 1.30 mm, kernel
    averages alone 0.79 / 1.62 mm, CPD (pycpd, best of a small grid) 0.83 mm."""
    source, target, exhale, inhale = sample_pair
    result = otreg.register(
        source, target, otreg.load_config("lung_vessels", ["output.jacobian=false"])
    )
    error = target_registration_error(result.transform(exhale), inhale)
    assert error.mean() < 0.32 and np.percentile(error, 95) < 0.85
    assert result.metrics["checks"]["flags"] == []


@pytest.mark.realdata
@pytest.mark.slow
def test_lobe_surface_with_a_known_motion(shared_data, tmp_path):
    """lung_surface preset on a LUNA16 lobe surface rebuilt as a mesh, moved by a known
    breathing motion and rebuilt at another spacing (benchmarks/bench_surface.py): measured
    error 9.28 -> 1.48 mm at the surface points, p95 2.77 mm (kernel averages alone: 3.50 mm)."""
    import sys

    sys.path.insert(0, str(SAMPLE))
    from synthetic_lobes import make_pair  # the maker of benchmarks/bench_surface.py's pairs

    path = shared_data / "luna16_lung_surfaces" / "subject0576_lung_surface.vtk"
    source_file, target_file, points, truth = make_pair(path, tmp_path)
    # untagged files; the known motion is in their stored coordinates
    source, target = (otreg.load(f, mesh_frame="ras") for f in (source_file, target_file))
    assert preset_for(source, target)[0] == "lung_surface"
    result = otreg.register(
        source, target, otreg.load_config("lung_surface", ["output.jacobian=false"])
    )
    error = np.linalg.norm(result.transform(points) - truth, axis=1)
    assert error.mean() < 1.65 and np.percentile(error, 95) < 3.1
