"""otreg's results used in ITK (SimpleITK), ANTs (ANTsPy) and by `otreg warp`, on real files.

The cip_chest pair is an exact rigid motion of one CT (same voxels, rotated header): resampling
the moving CT and label map onto the fixed grid must give the fixed image back over the WHOLE
image, not only near the lungs (the dense fields used to stop 10 mm beyond the clouds, where
ITK and ANTs then took zero displacement: Dice 0.9947, 438 HU mean error there).
"""

from __future__ import annotations

import numpy as np
import pytest

from otreg.io.frames import lps_to_ras, ras_to_lps

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

sitk = pytest.importorskip("SimpleITK", reason="SimpleITK reads otreg's ITK files here")


@pytest.fixture(scope="module")
def cip(shared_data, tmp_path_factory):
    import otreg

    folder = shared_data / "cip_chest"
    out = tmp_path_factory.mktemp("cip") / "out"
    otreg.run(
        folder / "lunglabels_moving.nii.gz",
        folder / "lunglabels_fixed.nii.gz",
        out,
        # the motion is rigid, so the fields are affine and any grid spacing gives them exactly
        # to ITK's and ANTs' linear interpolation: 8 mm, and 5,000 points (the rigid motion is
        # still found to 0.1 HU), keep the fields' cost down
        overrides=[
            "output.jacobian=false",
            "output.report_pictures=false",  # test_report*.py
            "output.grid_spacing=8",
            "input.points=5000",
        ],
        device="cpu",
    )
    return folder, out


def _dice_per_label(fixed: np.ndarray, warped: np.ndarray, min_voxels: int = 100) -> dict:
    labels = [v for v in np.unique(fixed) if v and (fixed == v).sum() >= min_voxels]
    return {
        int(v): 2
        * ((fixed == v) & (warped == v)).sum()
        / ((fixed == v).sum() + (warped == v).sum())
        for v in labels
    }


def _check_whole_image(folder, labels_xyz: np.ndarray, ct_xyz: np.ndarray) -> None:
    """Dice >= 0.999 per label and a CT error as small far from the lungs as near them."""
    import nibabel as nib

    fixed_labels = np.asarray(nib.load(folder / "lunglabels_fixed.nii.gz").dataobj)
    fixed_ct = np.asarray(nib.load(folder / "ct_fixed.nii.gz").dataobj).astype(np.float64)
    dice = _dice_per_label(fixed_labels, labels_xyz)
    assert len(dice) >= 10 and min(dice.values()) >= 0.999, dice
    assert ((labels_xyz > 0) & (fixed_labels == 0)).sum() <= 10  # no ghost lung voxels
    error = np.abs(ct_xyz.astype(np.float64) - fixed_ct)
    # far from the lungs: outside their box plus 10 mm (where the old fields stopped)
    ijk = np.argwhere(fixed_labels > 0)
    lo, hi = ijk.min(0) - 3, ijk.max(0) + 3
    far = np.ones(fixed_ct.shape, dtype=bool)
    far[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = False
    # measured: 0.11 HU everywhere (Dice 1.0 for every label); fields that stop at the clouds
    # gave 438.6 HU far from them
    assert error.mean() < 5.0
    assert error[far].mean() < 2 * error[~far].mean() + 10.0


def test_otreg_warp_resamples_the_whole_image(cip, tmp_path):
    import nibabel as nib

    import otreg

    folder, out = cip
    labels = otreg.warp(out, folder / "lunglabels_moving.nii.gz", tmp_path / "labels.nii.gz")
    ct = otreg.warp(out, folder / "ct_moving.nii.gz", tmp_path / "ct.nii.gz")
    labels_image, ct_image = nib.load(labels), nib.load(ct)
    fixed = nib.load(folder / "lunglabels_fixed.nii.gz")
    assert np.allclose(labels_image.affine, fixed.affine) and labels_image.shape == fixed.shape
    assert labels_image.get_data_dtype() == np.uint16  # "auto": a label map stays integer
    assert ct_image.get_data_dtype() == np.float32  # linear
    _check_whole_image(folder, np.asarray(labels_image.dataobj), np.asarray(ct_image.dataobj))


def _sitk_resample(folder, transform):
    """The moving label map (nearest) and CT (linear) resampled by ITK, as (X, Y, Z) arrays."""
    fixed_labels = sitk.ReadImage(str(folder / "lunglabels_fixed.nii.gz"))
    fixed_ct = sitk.ReadImage(str(folder / "ct_fixed.nii.gz"), sitk.sitkFloat32)
    labels = sitk.Resample(
        sitk.ReadImage(str(folder / "lunglabels_moving.nii.gz")),
        fixed_labels,
        transform,
        sitk.sitkNearestNeighbor,
        0,
    )
    ct = sitk.Resample(
        sitk.ReadImage(str(folder / "ct_moving.nii.gz"), sitk.sitkFloat32),
        fixed_ct,
        transform,
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    return (sitk.GetArrayFromImage(image).transpose(2, 1, 0) for image in (labels, ct))


def test_simpleitk_resamples_the_whole_image_with_the_composite_file(cip, tmp_path):
    import nibabel as nib

    import otreg

    folder, out = cip
    transform = sitk.ReadTransform(str(out / "transform_fixed_to_moving.h5"))
    assert transform.GetName() == "CompositeTransform"  # one file, one transform
    labels, ct = _sitk_resample(folder, transform)
    _check_whole_image(folder, labels, ct)
    # ITK with the file and otreg with its own transform agree (measured: 1e-4 HU mean)
    ours = otreg.warp(out, folder / "ct_moving.nii.gz", tmp_path / "ct.nii.gz")
    assert np.abs(np.asarray(nib.load(ours).dataobj) - ct).mean() < 0.05


def test_simpleitk_resamples_the_whole_image_with_the_nifti_field(cip):
    # the field covers the fixed image (its grid plus a margin), so it holds everywhere too;
    # SimpleITK reads it as a transform only as sitkVectorFloat64
    folder, out = cip
    field = sitk.ReadImage(str(out / "field_fixed_to_moving.nii.gz"), sitk.sitkVectorFloat64)
    labels, ct = _sitk_resample(folder, sitk.DisplacementFieldTransform(field))
    _check_whole_image(folder, labels, ct)


def test_ants_resamples_the_whole_image_with_the_composite_file(cip):
    ants = pytest.importorskip(
        "ants", reason="ANTsPy (pip install antspyx, in the 'test' extra) is not installed"
    )
    folder, out = cip
    h5 = [str(out / "transform_fixed_to_moving.h5")]

    def warp(name, interpolator):
        fixed = ants.image_read(str(folder / f"{name}_fixed.nii.gz"))
        moving = ants.image_read(str(folder / f"{name}_moving.nii.gz"))
        return ants.apply_transforms(fixed, moving, h5, interpolator=interpolator).numpy()

    _check_whole_image(folder, warp("lunglabels", "genericLabel"), warp("ct", "linear"))


def test_points_move_with_the_other_composite_file_in_lps(cip):
    # ITK's point convention: moving -> fixed, LPS points; the known motion is the truth
    import nibabel as nib

    from otreg.transforms import Transform

    folder, out = cip
    truth = np.loadtxt(folder / "expected_moving_to_fixed_ras.txt")
    image = nib.load(folder / "lunglabels_moving.nii.gz")
    ijk = np.argwhere(np.asarray(image.dataobj) > 0)[::97]
    points = ijk @ image.affine[:3, :3].T + image.affine[:3, 3]
    transform = sitk.ReadTransform(str(out / "transform_moving_to_fixed.h5"))
    moved = lps_to_ras(np.array([transform.TransformPoint(tuple(p)) for p in ras_to_lps(points)]))
    # ITK with the file = otreg's transform (measured: 0.004 mm at most)
    ours = Transform.load(out / "transform.npz")(points)
    assert np.linalg.norm(moved - ours, axis=1).max() < 0.05
    # and the registration recovers the known motion (measured: 0.64 mm mean, 4 mm voxels)
    expected = points @ truth[:3, :3].T + truth[:3, 3]
    assert np.linalg.norm(moved - expected, axis=1).mean() < 1.5


def test_the_readme_ants_command_line(cip, tmp_path):
    # antsApplyTransforms itself (ANTsPy ships it compiled; no ANTs binaries here), with the
    # README's arguments
    pytest.importorskip(
        "ants", reason="ANTsPy (pip install antspyx, in the 'test' extra) is not installed"
    )
    import nibabel as nib
    from ants.internal import get_lib_fn

    folder, out = cip
    warped = tmp_path / "labels.nii.gz"
    args = ["-d", "3", "-i", str(folder / "lunglabels_moving.nii.gz")]
    args += ["-r", str(folder / "lunglabels_fixed.nii.gz")]
    args += ["-t", str(out / "transform_fixed_to_moving.h5"), "-n", "GenericLabel"]
    assert get_lib_fn("antsApplyTransforms")([*args, "-o", str(warped)]) == 0
    fixed = np.asarray(nib.load(folder / "lunglabels_fixed.nii.gz").dataobj)
    dice = _dice_per_label(fixed, np.asarray(nib.load(warped).dataobj).round())
    assert min(dice.values()) >= 0.999
