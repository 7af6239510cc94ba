"""report.html for image inputs: the fixed and moving images fused on slices, before and after,
the moving image resampled through the transform."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest

import otreg
from otreg.report.build import ReportClouds, report_html
from otreg.report.slices import fused_planes
from otreg.transforms import Transform

SHIFT = np.array([6.0, -4.0, 8.0])  # mm: the moving image's world frame moved by this


def _pair(tmp_path):
    """A fixed mask (an ellipsoid and a block, 2 mm voxels) and the same voxels with a header
    translated by SHIFT: moving world point x is fixed world point x - SHIFT."""
    nib = pytest.importorskip("nibabel")
    i, j, k = np.meshgrid(*[np.arange(48)] * 3, indexing="ij")
    data = (((i - 22) / 12) ** 2 + ((j - 24) / 9) ** 2 + ((k - 25) / 15) ** 2 < 1).astype(np.uint8)
    data[30:38, 10:16, 8:20] = 2
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-48.0, -40.0, -50.0]
    moved = affine.copy()
    moved[:3, 3] += SHIFT
    fixed, moving = tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz"
    nib.Nifti1Image(data, affine).to_filename(fixed)
    nib.Nifti1Image(data, moved).to_filename(moving)
    return moving, fixed, affine


def test_after_the_transform_the_images_agree(tmp_path):
    moving, fixed, affine = _pair(tmp_path)
    rigid = np.eye(4)
    rigid[:3, 3] = -SHIFT  # source (moving) -> target (fixed)
    centre = affine[:3, :3] @ [22, 24, 25] + affine[:3, 3]
    planes = fused_planes(moving, fixed, Transform(rigid), centre, pixels=96)
    for view in ("coronal", "axial"):
        f, before = planes["before", view]
        _, after = planes["after", view]
        assert f.shape == before.shape == after.shape and f.max() > 0
        # before: the shift shows; after: the same picture up to interpolation at the borders
        assert np.abs(f - before).mean() > 0.01
        assert np.abs(f - after).mean() < 0.1 * np.abs(f - before).mean(), view


def test_image_inputs_get_a_fused_slices_picture(tmp_path):
    moving, fixed, _ = _pair(tmp_path)
    source, target = otreg.load(moving), otreg.load(fixed)
    rigid = np.eye(4)
    rigid[:3, 3] = -SHIFT
    clouds = ReportClouds.of(Transform(rigid), source.points, target.points)
    metrics = {
        "points": {"source": len(source), "target": len(target)},
        "residual_before": {"mean_mm": 5.0, "p95_mm": 9.0},
        "residual_after_rigid": {"mean_mm": 0.1, "p95_mm": 0.2},
        "residual_after": {"mean_mm": 0.1, "p95_mm": 0.2},
        "transported_mass": 1.0,
        "rounds": [],
        "times": {},
    }
    run = {"inputs": {"source": {"path": str(moving)}, "target": {"path": str(fixed)}}}
    # the slices come with the pictures (output.report_pictures), drawn without OpenGL
    config = otreg.load_config(None, output__report_pictures=True, output__report_points=500)
    page, _ = report_html(metrics, run, config, "", clouds)
    found = re.search(r'id="render-slices" alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert found, page[:2000]
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(found.group(1)))) as picture:
        assert picture.size[0] > 150 and picture.size[1] > 150
    assert "fixed (target) image in green" in page
