"""`otreg warp` on images: the cip_chest pair with its known rigid motion as the transform.

The moving images are the fixed ones' voxels under a rotated header, so with the exact motion
every fixed voxel comes from a moving voxel centre: the warped label map must equal the fixed
one and the CT match it up to rounding, over the whole image.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from otreg.transforms import Transform

pytestmark = pytest.mark.realdata

REPO = Path(__file__).resolve().parents[1]


def one_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    for needle in needles:
        assert needle.lower() in result.stderr.lower(), (needle, result.stderr)
    return result.stderr


@pytest.fixture(scope="module")
def known(shared_data, tmp_path_factory):
    """An output folder holding the exact motion, its target recorded as 'otreg run' does."""
    folder = shared_data / "cip_chest"
    out = tmp_path_factory.mktemp("known")
    Transform(np.loadtxt(folder / "expected_moving_to_fixed_ras.txt")).save(out / "transform.npz")
    target = {"path": str(folder / "lunglabels_fixed.nii.gz")}
    (out / "run.json").write_text(json.dumps({"inputs": {"target": target}}))
    return folder, out


def test_warp_label_map_and_ct_with_the_known_motion(run_otreg, known, tmp_path):
    import nibabel as nib

    folder, out = known
    labels = tmp_path / "labels.nii.gz"
    result = run_otreg(
        "warp", str(out), str(folder / "lunglabels_moving.nii.gz"), "-o", str(labels), check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(labels)
    fixed = nib.load(folder / "lunglabels_fixed.nii.gz")
    warped = nib.load(labels)
    assert warped.get_data_dtype() == np.uint16 and np.allclose(warped.affine, fixed.affine)
    assert np.array_equal(np.asarray(warped.dataobj), np.asarray(fixed.dataobj))

    ct = tmp_path / "ct.nii.gz"
    reference = folder / "ct_fixed.nii.gz"
    args = ["warp", str(out), str(folder / "ct_moving.nii.gz"), "-o", str(ct)]
    assert run_otreg(*args, "--reference", str(reference), check=False).returncode == 0
    fixed_ct = np.asarray(nib.load(reference).dataobj).astype(np.float64)
    error = np.abs(np.asarray(nib.load(ct).dataobj) - fixed_ct)
    assert error.max() < 0.5  # float rounding of voxel positions only

    nearest = tmp_path / "nearest.nii.gz"
    args = ["warp", str(out), str(folder / "ct_moving.nii.gz"), "-o", str(nearest)]
    assert run_otreg(*args, "--interpolation", "nearest", check=False).returncode == 0
    image = nib.load(nearest)
    assert image.get_data_dtype() == np.int16
    assert np.array_equal(np.asarray(image.dataobj), fixed_ct.astype(np.int16))


def test_warp_image_errors_write_nothing(run_otreg, known, tmp_path):
    folder, out = known
    moving = str(folder / "ct_moving.nii.gz")
    target = tmp_path / "x.nii.gz"
    one_error(
        run_otreg(
            "warp", str(out), moving, "-o", str(target), "--interpolation", "cubic", check=False
        ),
        "interpolation",
        "cubic",
    )
    # a registration whose target is not an image: the grid must be given
    points = tmp_path / "points_run"
    points.mkdir()
    (points / "transform.npz").write_bytes((out / "transform.npz").read_bytes())
    (points / "run.json").write_text(json.dumps({"inputs": {"target": {"path": "in.vtk"}}}))
    one_error(run_otreg("warp", str(points), moving, "-o", str(target), check=False), "--reference")
    # a mesh cannot become an image
    one_error(
        run_otreg(
            "warp",
            str(out),
            str(REPO / "sample_data" / "exhale_landmarks.txt"),
            "-o",
            str(target),
            check=False,
        ),
        "only an image",
    )
    assert not target.exists() and [p.name for p in tmp_path.iterdir()] == ["points_run"]
    # the output exists: never replaced without --overwrite
    target.write_bytes(b"mine")
    one_error(run_otreg("warp", str(out), moving, "-o", str(target), check=False), "--overwrite")
    assert target.read_bytes() == b"mine"


def test_register_a_ct_says_how_to_select(run_otreg, shared_data, tmp_path):
    folder = shared_data / "cip_chest"
    result = run_otreg(
        "register",
        str(folder / "ct_moving.nii.gz"),
        str(folder / "ct_fixed.nii.gz"),
        "-o",
        str(tmp_path / "out"),
        check=False,
    )
    one_error(result, "ct_moving.nii.gz", "--label", "--intensity-range", "mask", "otreg warp")
    assert list(tmp_path.iterdir()) == []


def test_nrrd_and_metaimage_through_simpleitk(run_otreg, known, tmp_path):
    # the same known motion with the moving labels as NRRD and the fixed grid from a
    # MetaImage (both LPS files, read and written through SimpleITK)
    import nibabel as nib
    import SimpleITK as sitk

    folder, out = known
    moving = tmp_path / "moving_labels.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(folder / "lunglabels_moving.nii.gz")), str(moving))
    fixed = tmp_path / "fixed_ct.mha"
    sitk.WriteImage(sitk.ReadImage(str(folder / "ct_fixed.nii.gz")), str(fixed))
    warped = tmp_path / "warped.nrrd"
    args = ["warp", str(out), str(moving), "-o", str(warped), "--reference", str(fixed)]
    result = run_otreg(*args)
    assert result.returncode == 0, result.stderr
    image = sitk.ReadImage(str(warped))
    assert image.GetPixelID() == sitk.sitkUInt16
    reference = sitk.ReadImage(str(fixed))
    assert np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    assert np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    expected = np.asarray(nib.load(folder / "lunglabels_fixed.nii.gz").dataobj)
    assert np.array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), expected)
    one_error(run_otreg(*args[:4], str(tmp_path / "x.nhdr"), check=False), "one file each")
