"""Dense displacement fields: ITK reads them the way otreg means them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from otreg.config import Config
from otreg.io.frames import lps_to_ras, ras_to_lps
from otreg.report.outputs import write_dense_fields
from otreg.transforms import Transform
from otreg.transforms.field import KernelField


class _Result:  # the parts of a RegistrationResult that write_dense_fields reads
    def __init__(self, transform, source, target):
        self.transform = transform

        class _Cloud:
            def __init__(self, points):
                self.points = points

        self.source, self.target = _Cloud(source), _Cloud(target)


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    rng = np.random.default_rng(0)
    source = rng.uniform([-60, -40, -50], [60, 40, 50], size=(400, 3)) + [20, -100, 300]
    rigid = np.eye(4)
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    rigid[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    rigid[:3, 3] = [5, -3, 8]
    moved = source @ rigid[:3, :3].T + rigid[:3, 3]
    z = (moved[:, 2] - moved[:, 2].min()) / np.ptp(moved[:, 2])
    displacement = np.column_stack([2 * z, np.zeros_like(z), -12 * (1 - z)])  # breathing-like
    field = KernelField(moved, displacement, np.ones(len(moved)), sigma=15.0)
    transform = Transform(rigid, [field])
    target = transform(source)
    folder = tmp_path_factory.mktemp("fields")
    config = Config.model_validate({"output": {"grid_spacing": 6.0, "grid_margin": 5.0}})
    info = write_dense_fields(folder, _Result(transform, source, target), config)
    return folder, transform, source, target, info


def test_nifti_layout_and_values(fields):
    import nibabel as nib

    folder, transform, _, _, _ = fields
    image = nib.load(folder / "field_moving_to_fixed.nii.gz")
    # intent 1006 (displacement vector, RAS vectors): what 3D Slicer loads as a transform
    assert image.shape[3:] == (1, 3) and int(image.header["intent_code"]) == 1006
    data = np.asarray(image.dataobj)
    ijk = np.array([3, 4, 5])
    point = image.affine[:3, :3] @ ijk + image.affine[:3, 3]
    vector_ras = data[3, 4, 5, 0].astype(np.float64)
    assert np.allclose(vector_ras, transform(point[None])[0] - point, atol=1e-3)


def test_inverse_field_inverts_near_the_data(fields):
    *_, info = fields
    assert info["inverse_residual_mm"]["median"] < 0.05


def test_simpleitk_reads_both_directions(fields):
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK checks that ITK reads our fields")
    folder, transform, source, _, _ = fields

    def itk_transform(name):
        image = sitk.ReadImage(str(folder / name), sitk.sitkVectorFloat64)
        return sitk.DisplacementFieldTransform(image)

    forward = itk_transform("field_moving_to_fixed.nii.gz")
    inside = source[np.all(np.abs(source - source.mean(0)) < [40, 25, 30], axis=1)][:50]
    got = np.array([forward.TransformPoint(tuple(p)) for p in ras_to_lps(inside)])
    # linear interpolation of a field sampled every 6 mm: sub-millimetre agreement
    assert np.abs(lps_to_ras(got) - transform(inside)).max() < 0.3

    backward = itk_transform("field_fixed_to_moving.nii.gz")
    moved = transform(inside)
    got = np.array([backward.TransformPoint(tuple(p)) for p in ras_to_lps(moved)])
    assert np.abs(lps_to_ras(got) - inside).max() < 0.3


def test_composite_transforms_hold_everywhere(fields):
    # one file per direction, read as ONE transform; far outside the fields' grid the rigid
    # part still holds (the field's part is zero there)
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK checks that ITK reads our files")
    folder, transform, source, _, _ = fields
    to_fixed = sitk.ReadTransform(str(folder / "transform_moving_to_fixed.h5"))
    to_moving = sitk.ReadTransform(str(folder / "transform_fixed_to_moving.h5"))
    assert to_fixed.GetName() == "CompositeTransform"
    inside = source[np.all(np.abs(source - source.mean(0)) < [40, 25, 30], axis=1)][:50]
    got = np.array([to_fixed.TransformPoint(tuple(p)) for p in ras_to_lps(inside)])
    assert np.abs(lps_to_ras(got) - transform(inside)).max() < 0.3
    moved = transform(inside)
    got = np.array([to_moving.TransformPoint(tuple(p)) for p in ras_to_lps(moved)])
    assert np.abs(lps_to_ras(got) - inside).max() < 0.3
    far = source.mean(0) + [400.0, -300.0, 500.0]  # hundreds of mm beyond the grid
    rigid_only = transform.rigid[:3, :3] @ far + transform.rigid[:3, 3]
    got = lps_to_ras(np.array(to_fixed.TransformPoint(tuple(ras_to_lps(far)))))
    assert np.allclose(got, rigid_only, atol=1e-6)


def test_simpleitk_reads_the_rigid_transform_file(tmp_path):
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK checks that ITK reads our files")
    from otreg.io.frames import matrix_ras_to_lps
    from otreg.report.outputs import itk_affine_text

    rigid = np.eye(4)
    c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
    rigid[:3, :3] = [[1, 0, 0], [0, c, -s], [0, s, c]]
    rigid[:3, 3] = [10, -20, 5]
    path = tmp_path / "rigid_fixed_to_moving.tfm"
    path.write_text(itk_affine_text(matrix_ras_to_lps(np.linalg.inv(rigid))))
    itk = sitk.ReadTransform(str(path))
    moving = np.array([[12.0, -40.0, 7.0], [-30.0, 5.0, 60.0]])
    fixed = moving @ rigid[:3, :3].T + rigid[:3, 3]
    got = np.array([itk.TransformPoint(tuple(p)) for p in ras_to_lps(fixed)])
    assert np.allclose(lps_to_ras(got), moving, atol=1e-6)


@pytest.fixture(scope="module")
def sample_registration(tmp_path_factory):
    """An output folder with a known breathing-like transform of the sample pair's space."""
    import otreg

    sample = Path(__file__).resolve().parents[1] / "sample_data"
    source = otreg.load(sample / "exhale_vessels.vtk").points[::10]  # controls 2.5 mm apart
    rigid = np.eye(4)
    c, s = np.cos(np.radians(4)), np.sin(np.radians(4))
    rigid[:3, :3] = [[1, 0, 0], [0, c, -s], [0, s, c]]
    rigid[:3, 3] = [2, -6, 4]
    moved = source @ rigid[:3, :3].T + rigid[:3, 3]
    z = (moved[:, 2] - moved[:, 2].min()) / np.ptp(moved[:, 2])
    displacement = np.column_stack([1.5 * z, 3 * (1 - z), -14 * (1 - z) ** 2])
    transform = Transform(rigid, [KernelField(moved, displacement, np.ones(len(moved)), 12.0)])
    folder = tmp_path_factory.mktemp("sample")
    transform.save(folder / "transform.npz")
    config = Config.model_validate({"output": {"grid_spacing": 4.0, "grid_margin": 10.0}})
    write_dense_fields(folder, _Result(transform, source, transform(source)), config)
    return folder, sample / "exhale_landmarks.txt"


def test_landmarks_through_itk_files_agree_with_otreg_warp(sample_registration, tmp_path):
    # the README's recipe: points move with the moving -> fixed files, as LPS points
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK reads otreg's ITK files here")
    import otreg

    folder, landmarks = sample_registration
    ours = np.loadtxt(otreg.warp(folder, landmarks, tmp_path / "moved.txt"))
    points_lps = ras_to_lps(np.loadtxt(landmarks))
    field = sitk.ReadImage(str(folder / "field_moving_to_fixed.nii.gz"), sitk.sitkVectorFloat64)
    for transform in (
        sitk.ReadTransform(str(folder / "transform_moving_to_fixed.h5")),
        sitk.DisplacementFieldTransform(field),
    ):
        moved = lps_to_ras(np.array([transform.TransformPoint(tuple(p)) for p in points_lps]))
        assert np.linalg.norm(moved - ours, axis=1).max() < 0.05
    # the trap the README warns of: RAS points given to ITK as they are
    wrong = np.array([transform.TransformPoint(tuple(p)) for p in np.loadtxt(landmarks)])
    assert np.linalg.norm(wrong - ours, axis=1).mean() > 1.0


def test_landmarks_through_ants_agree_with_otreg_warp(sample_registration, tmp_path):
    ants = pytest.importorskip(
        "ants", reason="ANTsPy (pip install antspyx, in the 'test' extra) is not installed"
    )
    import pandas as pd

    import otreg

    folder, landmarks = sample_registration
    ours = np.loadtxt(otreg.warp(folder, landmarks, tmp_path / "moved.txt"))
    points = pd.DataFrame(ras_to_lps(np.loadtxt(landmarks)), columns=["x", "y", "z"])
    moved = ants.apply_transforms_to_points(
        3, points, [str(folder / "transform_moving_to_fixed.h5")]
    )
    moved_ras = lps_to_ras(moved[["x", "y", "z"]].to_numpy())
    assert np.linalg.norm(moved_ras - ours, axis=1).max() < 0.05


def test_image_grid_nodes_are_voxel_centres_covering_the_image():
    from otreg.transforms.grids import image_grid

    affine = np.array(
        [[-0.7, 0, 0, 120.0], [0, 0, 0.7, -30.0], [0, -2.5, 0, 80.0], [0, 0, 0, 1]]
    )  # flipped and permuted axes, as NIfTI headers have them
    shape = (101, 64, 30)
    grid, step, first = image_grid(shape, affine, 4.0, margin=3.0)
    assert step.tolist() == [5, 1, 5] and first.tolist() == [-5, -2, -5]
    nodes = np.indices(grid.shape).reshape(3, -1).T
    voxels = first + nodes * step  # every node is a voxel centre of the image
    np.testing.assert_allclose(grid.points(), voxels @ affine[:3, :3].T + affine[:3, 3], atol=1e-9)
    assert (-voxels.min(0) * np.array([0.7, 2.5, 0.7]) >= 3.0).all()  # the margin
    assert (voxels.max(0) >= np.array(shape) - 1).all()  # the last voxel covered
    exact, step, _ = image_grid(shape, affine, 0.5)  # finer than the voxels: the image grid
    assert step.tolist() == [1, 1, 1] and exact.shape == shape


def test_fixed_fields_take_the_reference_images_grid(tmp_path):
    import nibabel as nib

    from otreg.transforms.grids import image_grid

    rng = np.random.default_rng(3)
    source = rng.uniform(-40, 40, size=(300, 3))
    shift = np.eye(4)
    shift[:3, 3] = [3.0, -2.0, 5.0]
    transform = Transform(shift)
    affine = np.diag([-3.0, -3.0, 3.0, 1.0])
    affine[:3, 3] = [150.0, 150.0, -150.0]
    reference = tmp_path / "fixed.nii.gz"
    nib.Nifti1Image(np.zeros((100, 100, 100), np.int16), affine).to_filename(reference)
    folder = tmp_path / "out"
    folder.mkdir()
    config = Config.model_validate({"output": {"grid_spacing": 6.0, "grid_margin": 0.0}})
    info = write_dense_fields(
        folder, _Result(transform, source, transform(source)), config, reference=reference
    )
    assert info["fixed_grid_from"] == str(reference)
    assert info["moving_grid_from"] == "the box of both clouds"
    field = nib.load(folder / "field_fixed_to_moving.nii.gz")
    grid = image_grid((100, 100, 100), affine, 6.0)[0]
    assert field.shape[:3] == grid.shape and np.allclose(field.affine, grid.affine)
    # a rigid shift: the pull-back is -shift everywhere on the whole image's grid
    vectors = np.asarray(field.dataobj)[..., 0, :].reshape(-1, 3)
    np.testing.assert_allclose(vectors, np.tile(-shift[:3, 3], (len(vectors), 1)), atol=1e-4)


def test_a_bad_reference_fails_before_any_work(tmp_path):
    import otreg
    from otreg.errors import InputError

    sample = Path(__file__).resolve().parents[1] / "sample_data"
    bad = tmp_path / "fixed.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="fixed.nii.gz.*NIfTI"):
        otreg.run(
            sample / "exhale_vessels.vtk",
            sample / "inhale_vessels.vtk",
            tmp_path / "out",
            reference=bad,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed.nii.gz"]
