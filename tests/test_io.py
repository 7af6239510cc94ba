"""Tests of otreg.io: formats, frames (RAS/LPS), weights, voxel selection, errors, atomic writes."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import otreg.io as io
from otreg.config import InputConfig
from otreg.errors import InputError, OutputError
from otreg.io import frames, meshes
from otreg.io.atomic import atomic_path, full_suffix, write_text_atomic
from otreg.io.pointlists import write_points_txt

pv = pytest.importorskip("pyvista")
nib = pytest.importorskip("nibabel")


# ----------------------------------------------------------------------------- helpers
def unit_square() -> pv.PolyData:
    """Unit square in z = 0 made of two triangles sharing the diagonal 0-2: area 1."""
    points = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=float)
    return pv.PolyData(points, faces=[3, 0, 1, 2, 3, 0, 2, 3])


def sphere() -> pv.PolyData:
    s = pv.Sphere(radius=10.0, theta_resolution=10, phi_resolution=8)
    s.point_data["radius"] = np.linspace(0.5, 2.0, s.n_points)
    return s


def set_header_line(path: Path, line: bytes) -> None:
    """Replace line 2 of a legacy .vtk file (its free-text header), as 3D Slicer writes it."""
    data = path.read_bytes()
    first = data.index(b"\n")
    second = data.index(b"\n", first + 1)
    path.write_bytes(data[: first + 1] + line + data[second:])


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.Nifti1Image(data, affine).to_filename(str(path))
    return path


def oblique_flipped_affine() -> np.ndarray:
    """Rotation of 30 deg about (1, 1, 1)/sqrt(3), a flipped axis, anisotropic voxels, offset."""
    axis = np.ones(3) / np.sqrt(3)
    angle = np.deg2rad(30)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-1.5, 2.0, 2.5])
    affine[:3, 3] = [100.0, -50.0, 20.0]
    return affine


def sorted_rows(points: np.ndarray) -> np.ndarray:
    p = np.round(np.asarray(points, dtype=float), 4)
    return p[np.lexsort(p.T[::-1])]


# ----------------------------------------------------------------------------- frames
def test_frames_points_and_matrices():
    p = np.array([[1.0, 2.0, 3.0], [-4.0, 5.0, -6.0]])
    lps = frames.ras_to_lps(p)
    np.testing.assert_array_equal(lps, [[-1, -2, 3], [4, -5, -6]])
    np.testing.assert_array_equal(frames.lps_to_ras(lps), p)
    np.testing.assert_array_equal(frames.LPS_FROM_RAS, np.diag([-1.0, -1.0, 1.0]))
    rng = np.random.default_rng(0)
    m = np.eye(4)
    m[:3, :3] = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    m[:3, 3] = rng.normal(size=3)
    m_lps = frames.matrix_ras_to_lps(m)
    homog = np.c_[p, np.ones(len(p))]
    # Same physical motion: map in RAS then convert == convert then map in LPS.
    np.testing.assert_allclose(
        frames.ras_to_lps((homog @ m.T)[:, :3]), (np.c_[lps, np.ones(2)] @ m_lps.T)[:, :3]
    )
    np.testing.assert_allclose(frames.matrix_lps_to_ras(m_lps), m)


# ----------------------------------------------------------------------------- atomic writes
def test_atomic_path_success_keeps_suffix(tmp_path):
    target = tmp_path / "out.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz") and tmp != target
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]
    assert full_suffix("a.b.vtk") == ".vtk"


def test_atomic_path_failure_leaves_old_file(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_missing_folder(tmp_path):
    with pytest.raises(OutputError, match="nowhere"):
        write_text_atomic(tmp_path / "nowhere" / "x.txt", "x")


# ----------------------------------------------------------------------------- meshes
@pytest.mark.parametrize("suffix", [".vtk", ".vtp", ".ply", ".obj", ".stl"])
def test_polydata_formats_round_trip(tmp_path, suffix):
    s = sphere()
    path = tmp_path / f"sphere{suffix}"
    s.save(path)  # no SPACE= tag: RAS as the file is, with input.mesh_frame = "ras"
    cloud = io.load(path, mesh_frame="ras")
    assert cloud.source == str(path)
    assert cloud.meta["space"] == "RAS" and cloud.meta["weights"] == "area"
    np.testing.assert_allclose(sorted_rows(cloud.points), sorted_rows(s.points), atol=1e-4)
    np.testing.assert_allclose(cloud.mass, s.area, rtol=1e-5)
    if suffix in (".vtk", ".vtp"):
        np.testing.assert_allclose(cloud.points, s.points, atol=1e-6)
        np.testing.assert_allclose(cloud.features["radius"], s.point_data["radius"])


@pytest.mark.parametrize("suffix", [".vtk", ".vtu"])
def test_unstructured_grid_round_trip(tmp_path, suffix):
    s = sphere()
    ug = s.cast_to_unstructured_grid()
    path = tmp_path / f"grid{suffix}"
    ug.save(path)
    cloud = io.load(path, mesh_frame="ras")
    assert cloud.meta["dataset"] == "UnstructuredGrid"
    np.testing.assert_allclose(cloud.points, s.points, atol=1e-6)
    np.testing.assert_allclose(cloud.mass, s.area, rtol=1e-5)
    np.testing.assert_allclose(cloud.features["radius"], s.point_data["radius"])


def test_unstructured_grid_of_quads_and_tetra(tmp_path):
    points = np.array(
        [[0, 0, 0], [2, 0, 0], [2, 3, 0], [0, 3, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1], [0, 0, 2]],
        float,
    )
    cells = np.array([4, 0, 1, 2, 3, 4, 4, 5, 6, 7])
    ug = pv.UnstructuredGrid(cells, np.array([9, 10], dtype=np.uint8), points)  # quad, tetra
    path = tmp_path / "mixed.vtk"
    ug.save(path)
    cloud = io.load(path)
    # Only the quad is a surface (area 6, split in 2 triangles); tetra vertices get 0.
    np.testing.assert_allclose(cloud.mass, 6.0)
    np.testing.assert_allclose(cloud.weights[4:], 0.0)
    tetra_only = pv.UnstructuredGrid(cells[5:], np.array([10], dtype=np.uint8), points)
    tetra_only.save(tmp_path / "tetra.vtu")
    np.testing.assert_array_equal(io.load(tmp_path / "tetra.vtu").weights, np.ones(8))


def test_area_weights_unit_square(tmp_path):
    path = tmp_path / "square.vtp"
    unit_square().save(path)
    cloud = io.load(path)
    np.testing.assert_allclose(cloud.weights, [1 / 3, 1 / 6, 1 / 3, 1 / 6])
    assert cloud.mass == pytest.approx(1.0)
    uniform = io.load(path, surface_weights="uniform")
    np.testing.assert_array_equal(uniform.weights, np.ones(4))


def test_area_weights_polygon_isolated_vertex_and_degenerate(tmp_path):
    points = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [5, 5, 5]], dtype=float)
    quad = pv.PolyData(points, faces=[4, 0, 1, 2, 3])  # point 4 belongs to no face
    quad.save(tmp_path / "quad.vtk")
    cloud = io.load(tmp_path / "quad.vtk")
    assert cloud.mass == pytest.approx(1.0)
    assert cloud.weights[4] == 0.0
    flat = pv.PolyData(
        np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], float),
        faces=[3, 0, 1, 2, 3, 1, 2, 3],
    )
    flat.save(tmp_path / "flat.vtp")  # zero-area triangles only: uniform fallback
    np.testing.assert_array_equal(io.load(tmp_path / "flat.vtp").weights, np.ones(4))


def test_point_cloud_uniform_weights_and_weight_by(tmp_path):
    rng = np.random.default_rng(1)
    cloud_pv = pv.PolyData(rng.normal(size=(50, 3)))
    cloud_pv.point_data["radius"] = rng.uniform(0.5, 2.0, 50)
    path = tmp_path / "vessels.vtk"
    cloud_pv.save(path)
    cloud = io.load(path)
    np.testing.assert_array_equal(cloud.weights, np.ones(50))
    weighted = io.load(path, weight_by="radius")
    np.testing.assert_allclose(weighted.weights, cloud_pv.point_data["radius"])
    assert weighted.meta["weight_by"] == "radius"


def test_lps_header_detection(tmp_path):
    s = sphere()
    s.point_data["flow"] = s.points * 0.1
    s.point_data.active_vectors_name = "flow"
    path = tmp_path / "slicer.vtk"
    s.save(path, binary=True)
    set_header_line(path, b"vtk output SPACE=LPS")
    assert meshes.detect_space(path) == "LPS"
    cloud = io.load(path)
    assert cloud.meta["space"] == "LPS"
    np.testing.assert_allclose(cloud.points, s.points * [-1, -1, 1], atol=1e-6)
    np.testing.assert_allclose(
        cloud.features["flow"], s.point_data["flow"] * [-1, -1, 1], atol=1e-6
    )
    np.testing.assert_allclose(
        cloud.features["radius"], s.point_data["radius"]
    )  # scalars unchanged
    set_header_line(path, b"3D Slicer output. SPACE=RAS")
    ras = io.load(path)
    assert ras.meta["space"] == "RAS" and ras.meta["space_declared"]
    np.testing.assert_allclose(ras.points, s.points, atol=1e-6)


def test_vtp_space_field_detection(tmp_path):
    s = sphere()
    s.field_data["SPACE"] = np.array(["LPS"])
    s.save(tmp_path / "slicer.vtp")
    cloud = io.load(tmp_path / "slicer.vtp")
    assert cloud.meta["space"] == "LPS"
    np.testing.assert_allclose(cloud.points, s.points * [-1, -1, 1], atol=1e-6)


def shift_mapping(points):
    shift = np.array([1.0, 2.0, 3.0])
    return points + shift, {
        "displacement": np.tile(shift, (len(points), 1)),
        "confidence": np.full(len(points), 0.5),
    }


def test_warped_copy_keeps_lps_and_cells(tmp_path):
    s = sphere()
    path_in = tmp_path / "in.vtk"
    s.save(path_in)
    set_header_line(path_in, b"vtk output SPACE=LPS")
    original = io.load(path_in)
    path_out = io.warp_file(path_in, tmp_path / "out.vtk", shift_mapping)
    # Header line 2 carries the same frame tag.
    assert path_out.read_bytes().split(b"\n")[1] == b"vtk output SPACE=LPS"
    raw = pv.read(path_out)
    np.testing.assert_array_equal(raw.faces, s.faces)  # cells kept
    np.testing.assert_allclose(raw.points, (original.points + [1, 2, 3]) * [-1, -1, 1], atol=1e-6)
    np.testing.assert_allclose(
        raw.point_data["displacement"], np.tile([-1.0, -2.0, 3.0], (s.n_points, 1))
    )
    np.testing.assert_allclose(raw.point_data["confidence"], 0.5)
    np.testing.assert_allclose(raw.point_data["radius"], s.point_data["radius"])
    assert "Normals" not in raw.point_data  # stale normals dropped
    again = io.load(path_out)
    assert again.meta["space"] == "LPS"
    np.testing.assert_allclose(again.points, original.points + [1, 2, 3], atol=1e-6)
    np.testing.assert_allclose(
        again.features["displacement"], np.tile([1.0, 2.0, 3.0], (s.n_points, 1))
    )
    # Same input written as .vtp: the tag becomes Slicer's SPACE field.
    vtp = io.warp_file(path_in, tmp_path / "out.vtp", shift_mapping)
    assert str(pv.read(vtp).field_data["SPACE"][0]) == "LPS"
    np.testing.assert_allclose(io.load(vtp).points, original.points + [1, 2, 3], atol=1e-6)
    # STL and PLY carry the tag in their header / a comment, as Slicer writes them.
    for suffix in (".stl", ".ply"):
        out = io.warp_file(path_in, tmp_path / f"out{suffix}", shift_mapping)
        moved = io.load(out)
        assert moved.meta["space"] == "LPS", suffix
        np.testing.assert_allclose(
            sorted_rows(moved.points), sorted_rows(original.points + [1, 2, 3]), atol=1e-3
        )
    with pytest.raises(OutputError, match="out.obj"):
        io.warp_file(path_in, tmp_path / "out.obj", shift_mapping)


def test_warped_copy_unstructured_grid_and_stl(tmp_path):
    s = sphere()
    ug = s.cast_to_unstructured_grid()
    ug.save(tmp_path / "grid.vtk")
    out = io.warp_file(tmp_path / "grid.vtk", tmp_path / "grid_warped.vtk", shift_mapping)
    raw = pv.read(out)
    assert isinstance(raw, pv.UnstructuredGrid)
    np.testing.assert_array_equal(raw.celltypes, ug.celltypes)
    # an untagged input is read as LPS (input.mesh_frame), and its copy says so
    np.testing.assert_allclose(raw.points, ug.points + [-1, -2, 3], atol=1e-6)
    assert out.read_bytes().split(b"\n")[1] == b"vtk output SPACE=LPS"
    s.save(tmp_path / "surface.stl")
    assert meshes.warped_suffix(tmp_path / "surface.stl") == ".vtp"
    assert meshes.warped_suffix("a.VTU") == ".vtu"
    vtp = io.warp_file(tmp_path / "surface.stl", tmp_path / "surface_warped.vtp", shift_mapping)
    warped = pv.read(vtp)
    assert warped.GetNumberOfPolys() == s.n_cells
    assert "displacement" in warped.point_data


def test_warp_file_text_outputs_and_point_clouds(tmp_path):
    pts = np.random.default_rng(2).normal(size=(10, 3))
    np.savetxt(tmp_path / "pts.txt", pts)
    txt = io.warp_file(tmp_path / "pts.txt", tmp_path / "moved.txt", shift_mapping)
    np.testing.assert_allclose(np.loadtxt(txt), pts + [1, 2, 3], atol=1e-6)
    vtp = io.warp_file(tmp_path / "pts.txt", tmp_path / "moved.vtp", shift_mapping)
    raw = pv.read(vtp)
    assert raw.n_verts == 10 and str(raw.field_data["SPACE"][0]) == "RAS"
    np.testing.assert_allclose(raw.points, pts + [1, 2, 3], atol=1e-6)
    legacy = io.warp_file(tmp_path / "pts.txt", tmp_path / "moved.vtk", shift_mapping)
    assert b"SPACE=RAS" in legacy.read_bytes().split(b"\n")[1]
    np.testing.assert_allclose(io.load(legacy).points, pts + [1, 2, 3], atol=1e-6)
    csv = io.warp_file(tmp_path / "pts.txt", tmp_path / "moved.csv", lambda p: p)
    np.testing.assert_allclose(np.loadtxt(csv, delimiter=","), pts, atol=1e-6)
    with pytest.raises(OutputError, match="moved.stl"):
        io.warp_file(tmp_path / "pts.txt", tmp_path / "moved.stl", shift_mapping)


def test_warp_file_nifti_to_point_cloud(tmp_path):
    data = np.zeros((4, 5, 6), dtype=np.uint8)
    data[1:3, 1:4, 2:5] = 1
    path = save_nifti(tmp_path / "mask.nii.gz", data, np.diag([2.0, 2.0, 3.0, 1.0]))
    out = io.warp_file(path, tmp_path / "mask_moved.vtp", shift_mapping, load_kwargs={"label": [1]})
    raw = pv.read(out)
    np.testing.assert_allclose(raw.points, io.load(path).points + [1, 2, 3], atol=1e-6)
    np.testing.assert_allclose(raw.point_data["confidence"], 0.5)


# ----------------------------------------------------------------------------- point lists
def test_point_list_text_variants(tmp_path):
    expected = np.array([[1.5, 2, 3], [4, 5, 6], [7, 8, 9.25], [-1, 0, 1e3]])
    (tmp_path / "a.csv").write_text(
        "# exported by a tool\nx,y,z\n1.5,2,3\n4,5,6 # inline comment\n\n7,8,9.25\n-1,0,1e3\n"
    )
    (tmp_path / "b.txt").write_bytes(b"1.5\t2\t3\r\n4\t5\t6\r\n7\t8\t9.25\r\n-1\t0\t1000\r\n")
    (tmp_path / "c.txt").write_text("x y z label\n1.5 2 3 1\n4 5 6 1\n7  8 9.25 2\n-1 0 1000 2\n")
    for name in ("a.csv", "b.txt", "c.txt"):
        cloud = io.load(tmp_path / name)
        np.testing.assert_allclose(cloud.points, expected, err_msg=name)
        np.testing.assert_array_equal(cloud.weights, np.ones(4))
    np.save(tmp_path / "d.npy", np.c_[expected, np.arange(4)])
    np.testing.assert_allclose(io.load(tmp_path / "d.npy").points, expected)


def test_write_points_txt_round_trip(tmp_path):
    pts = np.random.default_rng(3).normal(size=(7, 3)) * 100
    path = write_points_txt(tmp_path / "p.txt", pts)
    lines = path.read_text().splitlines()
    assert len(lines) == 7 and len(lines[0].split()) == 3
    np.testing.assert_allclose(io.load(path).points, pts, atol=1e-6)


# ----------------------------------------------------------------------------- volumes
def test_nifti_oblique_flipped_affine(tmp_path):
    affine = oblique_flipped_affine()
    data = np.zeros((6, 7, 8), dtype=np.int16)
    data[2, 3, 4] = 7
    data[5, 0, 7] = 3
    data[1:3, 1:3, 1:3] = 9
    path = save_nifti(tmp_path / "labels.nii.gz", data, affine)
    seven = io.load(path, label=[7, 9])
    i = np.flatnonzero(seven.features["intensity"] == 7)
    assert len(i) == 1
    np.testing.assert_allclose(seven.points[i[0]], (affine @ [2, 3, 4, 1])[:3])
    np.testing.assert_allclose(seven.weights, abs(np.linalg.det(affine[:3, :3])))
    assert seven.mass == pytest.approx(9 * 1.5 * 2.0 * 2.5)
    np.testing.assert_allclose(seven.meta["affine"], affine)
    everything = io.load(path)  # integer label map: all non-zero voxels
    assert len(everything) == 10
    np.testing.assert_allclose(
        everything.points[everything.features["intensity"] == 3][0], (affine @ [5, 0, 7, 1])[:3]
    )


def test_nifti_selection_by_intensity_and_float_mask(tmp_path):
    rng = np.random.default_rng(4)
    ct = rng.normal(-500, 300, size=(8, 8, 8)).astype(np.float32)
    path = save_nifti(tmp_path / "ct.nii", ct, np.eye(4))
    cloud = io.load(path, intensity_range=(-600, -400))
    assert len(cloud) == int(((ct >= -600) & (ct <= -400)).sum())
    assert ((cloud.features["intensity"] >= -600) & (cloud.features["intensity"] <= -400)).all()
    with pytest.raises(InputError, match="--label.*--intensity-range") as err:
        io.load(path)
    assert str(path) in str(err.value)
    mask = (ct > -500).astype(np.float64)  # a mask stored as float
    m = io.load(save_nifti(tmp_path / "mask.nii.gz", mask, np.eye(4)))
    assert len(m) == int(mask.sum())


def test_nifti_4d_and_5d(tmp_path):
    data = np.zeros((4, 4, 4, 3), dtype=np.uint8)
    data[1:3, 1:3, 1:3, 1] = 1
    path = save_nifti(tmp_path / "series.nii.gz", data, np.eye(4))
    with pytest.raises(InputError, match="4D image with 3 volumes: choose one with volume=") as err:
        io.load(path)
    assert str(path) in str(err.value)
    assert len(io.load(path, volume=1)) == 8
    with pytest.raises(InputError, match="no voxel selected"):
        io.load(path, volume=0)
    with pytest.raises(InputError, match="out of range"):
        io.load(path, volume=3)
    path5 = save_nifti(tmp_path / "five.nii.gz", np.ones((3, 3, 3, 2, 2), np.uint8), np.eye(4))
    with pytest.raises(InputError, match="5D"):
        io.load(path5)


def test_nifti_absent_label_lists_present_labels(tmp_path):
    data = np.zeros((10, 10, 10), dtype=np.uint16)
    data[:2] = 13
    data[2:4] = 14
    data[4:6] = 16
    path = save_nifti(tmp_path / "lobes.nii.gz", data, np.eye(4))
    with pytest.raises(InputError, match=r"label 15 not found.*labels present: 13, 14, 16$") as err:
        io.load(path, label=[13, 15])
    assert str(path) in str(err.value)
    many = np.arange(1000, dtype=np.int32).reshape(10, 10, 10)
    with pytest.raises(InputError, match=r"1, 2, 3.*20 \.\.\. \(999 in all\)"):
        io.load(save_nifti(tmp_path / "many.nii.gz", many, np.eye(4)), label=[5000])


def test_nifti_int_ct_needs_selection(tmp_path):
    ct = np.full((5, 5, 5), -1000, dtype=np.int16)
    ct[1:4, 1:4, 1:4] = 40
    path = save_nifti(tmp_path / "ct_int.nii.gz", ct, np.eye(4))
    with pytest.raises(InputError, match="negative values"):
        io.load(path)
    assert len(io.load(path, intensity_range=(0, 100))) == 27


# ----------------------------------------------------------------------------- landmarks
def test_dirlab_landmarks(tmp_path):
    path = tmp_path / "case1_300_T00_xyz.txt"
    path.write_bytes(b"211\t139\t66\r\n27\t131\t72\r\n1\t1\t1\r\n")
    spacing = (0.97, 0.97, 2.5)
    mm = io.read_landmarks(path, "dirlab", spacing)
    np.testing.assert_allclose(
        mm, [[210 * 0.97, 138 * 0.97, 65 * 2.5], [26 * 0.97, 130 * 0.97, 71 * 2.5], [0, 0, 0]]
    )
    with pytest.raises(InputError, match="spacing") as err:
        io.read_landmarks(path, "dirlab")
    assert str(path) in str(err.value)
    out = io.warp_file(
        path, tmp_path / "moved.txt", lambda p: p + 1, landmark_format="dirlab", spacing=spacing
    )
    np.testing.assert_allclose(np.loadtxt(out), mm + 1, atol=1e-6)
    with pytest.raises(OutputError):
        io.warp_file(
            path, tmp_path / "moved.vtk", lambda p: p, landmark_format="dirlab", spacing=spacing
        )
    zero = tmp_path / "zero.txt"
    zero.write_text("0 5 5\n")
    with pytest.raises(InputError, match="1-based"):
        io.read_landmarks(zero, "dirlab", spacing)


def test_mm_landmarks_from_text_and_mesh(tmp_path):
    (tmp_path / "lm.txt").write_text("1 2 3\n4 5 6\n")  # two landmarks: fewer than 4 is fine here
    np.testing.assert_allclose(io.read_landmarks(tmp_path / "lm.txt"), [[1, 2, 3], [4, 5, 6]])
    pts = pv.PolyData(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    pts.save(tmp_path / "lm.vtk")
    set_header_line(tmp_path / "lm.vtk", b"vtk output SPACE=LPS")
    np.testing.assert_allclose(io.read_landmarks(tmp_path / "lm.vtk"), [[-1, -2, 3], [-4, -5, 6]])


# ----------------------------------------------------------------------------- bad inputs
def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, dict, str]]:
    """name -> (path, load options, a word the message must contain)."""
    cases: dict[str, tuple[Path, dict, str]] = {}
    (tmp / "folder.vtk").mkdir()
    cases["missing"] = (tmp / "nope.vtk", {}, "no such file")
    cases["directory"] = (tmp / "folder.vtk", {}, "directory")
    (tmp / "data.xyz").write_text("1 2 3\n")
    cases["unknown suffix"] = (tmp / "data.xyz", {}, ".nii.gz")
    for suffix in (".vtk", ".vtp", ".vtu", ".stl", ".ply", ".obj"):
        (tmp / f"garbage{suffix}").write_bytes(b"garbage\nnot a mesh\n\x00\x01\x02")
        word = (
            "not" if suffix in (".stl", ".ply") else "read"
        )  # "not an STL file", "not a valid PLY"
        cases[f"garbage {suffix}"] = (tmp / f"garbage{suffix}", {}, word)
    (tmp / "empty.vtk").write_bytes(b"")
    cases["empty file"] = (tmp / "empty.vtk", {}, "read")
    s = sphere()
    s.save(tmp / "full.vtk", binary=True)
    data = (tmp / "full.vtk").read_bytes()
    (tmp / "truncated.vtk").write_bytes(data[: len(data) // 3])
    cases["truncated binary vtk"] = (tmp / "truncated.vtk", {}, "read")
    for suffix, keep in ((".ply", 0.6), (".ply", 0.02), (".stl", 0.9)):
        # VTK crashes on truncated binary PLY and drops triangles of a short STL: prechecked.
        s.save(tmp / f"full{suffix}")
        blob = (tmp / f"full{suffix}").read_bytes()
        name = f"truncated{keep}{suffix}"
        (tmp / name).write_bytes(blob[: int(len(blob) * keep)])
        cases[f"truncated {suffix} ({keep:.0%})"] = (
            tmp / name,
            {},
            "PLY" if keep < 0.1 else "truncated",
        )
    s.save(tmp / "ascii.ply", binary=False)
    blob = (tmp / "ascii.ply").read_bytes()
    (tmp / "truncated_ascii.ply").write_bytes(blob[: int(len(blob) * 0.9)])
    cases["truncated ascii .ply"] = (tmp / "truncated_ascii.ply", {}, "truncated")
    s.save(tmp / "ascii.vtk", binary=False)
    text = (tmp / "ascii.vtk").read_text()
    (tmp / "cut_points.vtk").write_text(text[: text.index("POLYGONS") // 2 + 3])
    cases["ascii vtk cut inside POINTS"] = (tmp / "cut_points.vtk", {}, "coordinates")
    pv.PolyData().save(tmp / "nopoints.vtp")
    cases["mesh without points"] = (tmp / "nopoints.vtp", {}, "0 points")
    (tmp / "empty.txt").write_text("# nothing\n")
    cases["empty point list"] = (tmp / "empty.txt", {}, "no rows")
    (tmp / "three.txt").write_text("0 0 0\n1 0 0\n0 1 0\n")
    cases["fewer than 4 points"] = (tmp / "three.txt", {}, "at least 4")
    (tmp / "nan.csv").write_text("0,0,0\n1,0,0\nnan,1,0\n0,0,1\n")
    cases["NaN coordinates"] = (tmp / "nan.csv", {}, "NaN")
    (tmp / "ragged.txt").write_text("0 0 0\n1 0\n")
    cases["ragged rows"] = (tmp / "ragged.txt", {}, "line 2")
    (tmp / "words.txt").write_text("0 0 0\n1 0 zero\n")
    cases["non-numeric row"] = (tmp / "words.txt", {}, "line 2")
    np.save(tmp / "flat.npy", np.zeros(12))
    cases["npy of wrong shape"] = (tmp / "flat.npy", {}, "shape")
    cloud_pv = pv.PolyData(np.random.default_rng(0).normal(size=(6, 3)))
    cloud_pv.point_data["radius"] = np.array([1.0, 2.0, -1.0, 1.0, 1.0, 1.0])
    cloud_pv.point_data["zero"] = np.zeros(6)
    cloud_pv.save(tmp / "radius.vtk")
    cases["negative weight_by"] = (tmp / "radius.vtk", {"weight_by": "radius"}, "negative")
    cases["all-zero weight_by"] = (tmp / "radius.vtk", {"weight_by": "zero"}, "weight 0")
    cases["missing weight_by array"] = (
        tmp / "radius.vtk",
        {"weight_by": "diameter"},
        "'radius', 'zero'",
    )
    save_nifti(tmp / "zeros.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))
    cases["empty mask"] = (tmp / "zeros.nii.gz", {}, "no voxel selected")
    save_nifti(tmp / "ok.nii.gz", np.ones((4, 4, 4), np.uint8), np.eye(4))
    blob = gzip.decompress((tmp / "ok.nii.gz").read_bytes())
    (tmp / "truncated.nii.gz").write_bytes(gzip.compress(blob[: len(blob) - 40]))
    cases["truncated nifti"] = (tmp / "truncated.nii.gz", {}, "NIfTI")
    (tmp / "garbage.nii").write_bytes(b"not a nifti header" * 30)
    cases["garbage nifti"] = (tmp / "garbage.nii", {}, "NIfTI")
    return cases


def test_bad_inputs_raise_one_input_error_naming_the_file(tmp_path):
    failures = []
    for name, (path, options, word) in _bad_inputs(tmp_path).items():
        try:
            io.load(path, **options)
        except InputError as err:
            message = str(err)
            if str(path) not in message or word.lower() not in message.lower():
                failures.append(f"{name}: {message!r} lacks {str(path)!r} or {word!r}")
            assert err.exit_code == 2
        else:
            failures.append(f"{name}: no InputError")
    assert not failures, "\n".join(failures)


def test_unknown_suffix_lists_supported(tmp_path):
    (tmp_path / "scan.mha").write_bytes(b"x")
    with pytest.raises(InputError) as err:
        io.load(tmp_path / "scan.mha")
    for suffix in io.supported_suffixes():
        assert suffix in str(err.value)
    assert io.file_suffix("A.NII.GZ") == ".nii.gz"
    assert set(io.supported_suffixes()) >= {
        ".vtk",
        ".vtp",
        ".vtu",
        ".stl",
        ".ply",
        ".obj",
        ".txt",
        ".csv",
        ".npy",
        ".nii",
        ".nii.gz",
    }


def test_bad_input_is_silent(tmp_path, capfd, caplog):
    """VTK errors become the InputError, not console noise or root-logger records."""
    (tmp_path / "garbage.vtk").write_bytes(b"garbage\n")
    with pytest.raises(InputError):
        io.load(tmp_path / "garbage.vtk")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert not [r for r in caplog.records if r.name == "root"]


# ----------------------------------------------------------------------------- options, imports
def test_load_options_from_config():
    assert io.load_options(InputConfig()) == {
        "label": None,
        "intensity_range": None,
        "volume": None,
        "weight_by": None,
        "surface_weights": "area",
        "mesh_frame": "lps",
    }
    cfg = InputConfig(label=[13, 14], intensity_range=(-1000, -500), volume=2, weight_by="radius")
    opts = io.load_options(cfg)
    assert opts["label"] == [13, 14] and opts["intensity_range"] == (-1000.0, -500.0)
    assert opts["volume"] == 2 and opts["weight_by"] == "radius"


def test_import_is_light():
    code = (
        "import sys, otreg, otreg.io, otreg.io.meshes, otreg.io.volumes, otreg.sampling\n"
        "otreg.io.load\n"
        "heavy = [m for m in ('pyvista', 'vtk', 'vtkmodules', 'nibabel', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_files(shared_data):
    vessels = io.load(
        shared_data / "copd1_vessels" / "copd1_exhale_vessels.vtk", weight_by="radius"
    )
    assert len(vessels) == 60000 and "radius" in vessels.features
    np.testing.assert_allclose(vessels.weights, vessels.features["radius"])
    lungs = io.load(shared_data / "cip_chest" / "lunglabels_fixed.nii.gz")
    assert len(lungs) > 1000 and lungs.meta["selection"] == {"nonzero": True}
    voxel = abs(np.linalg.det(lungs.meta["affine"][:3, :3]))
    assert lungs.mass == pytest.approx(len(lungs) * voxel)
    seg = shared_data / "totalsegmentator" / "example_seg_v1" / "example_seg.nii.gz"
    lobes = io.load(seg, label=[13, 14, 16, 17])
    assert set(np.unique(lobes.features["intensity"])) == {13, 14, 16, 17}
    with pytest.raises(InputError, match=r"label 15 not found.*13, 14, 16, 17") as err:
        io.load(seg, label=[13, 14, 15, 16, 17])
    assert str(seg) in str(err.value)
    # DIR-LAB landmarks (1-based voxel indices) land in the frame of the case's point cloud.
    dirlab = shared_data / "dirlab4dct"
    landmarks = io.read_landmarks(dirlab / "case1_300_T00_xyz.txt", "dirlab", (0.97, 0.97, 2.5))
    inhale = io.load(dirlab / "case1_inhale_points.vtk", mesh_frame="ras")  # untagged, as-is
    assert landmarks.shape == (300, 3)
    assert (landmarks > inhale.points.min(0) - 20).all() and (
        landmarks < inhale.points.max(0) + 20
    ).all()
