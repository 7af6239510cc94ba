"""Meshes without a SPACE= tag: read as LPS like 3D Slicer (>= 4.11) and ITK-based tools, or as
RAS with ``input.mesh_frame = "ras"``; what otreg writes says its frame and reads back in place."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import pyvista as pv

import otreg
from otreg import io
from otreg.config import InputConfig
from otreg.io import meshes

FLIP = np.array([-1.0, -1.0, 1.0])


def untagged(tmp_path, suffix=".vtk"):
    surface = pv.Sphere(radius=20.0, center=(30.0, -40.0, 120.0))
    path = tmp_path / f"untagged{suffix}"
    surface.save(path)  # pyvista writes no SPACE= tag
    assert meshes.detect_space(path) is None
    return path, np.asarray(surface.points, dtype=np.float64)


@pytest.mark.parametrize("suffix", [".vtk", ".vtp", ".ply"])
def test_untagged_mesh_is_lps_with_a_note_in_the_log(tmp_path, caplog, suffix):
    path, stored = untagged(tmp_path, suffix)
    with caplog.at_level(logging.INFO, logger="otreg.io.meshes"):
        cloud = io.load(path)
    np.testing.assert_allclose(cloud.points, stored * FLIP, atol=1e-5)
    assert cloud.meta["space"] == "LPS" and not cloud.meta["space_declared"]
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert str(path) in warning and "read as LPS" in warning and "mesh_frame = 'ras'" in warning


def test_mesh_frame_ras_reads_it_as_stored(tmp_path):
    path, stored = untagged(tmp_path)
    options = io.load_options(InputConfig(mesh_frame="ras"))
    cloud = io.load(path, **options)
    np.testing.assert_allclose(cloud.points, stored, atol=1e-5)
    assert cloud.meta["space"] == "RAS"


def test_a_tag_wins_over_mesh_frame(tmp_path):
    path = tmp_path / "slicer.vtk"
    path.write_bytes(b"")  # replaced below
    surface = pv.Sphere(radius=10.0)
    meshes.write_dataset(surface, path, space_tag="RAS")
    cloud = io.load(path, mesh_frame="lps")
    np.testing.assert_allclose(cloud.points, surface.points, atol=1e-5)


@pytest.mark.parametrize("frame", ["lps", "ras"])
@pytest.mark.parametrize("suffix", [".vtk", ".vtp", ".vtu"])
def test_round_trip_through_writer_and_reader_stays_in_place(tmp_path, frame, suffix):
    # an untagged input warped by the identity: the copy is tagged with the frame it was read
    # in, so it reads back at the same RAS positions whatever mesh_frame the reader uses
    path, _ = untagged(tmp_path)
    original = io.load(path, mesh_frame=frame).points
    out = io.warp_file(
        path, tmp_path / f"copy{suffix}", lambda p: (p, {}), load_kwargs={"mesh_frame": frame}
    )
    for reader_frame in ("lps", "ras"):
        again = io.load(out, mesh_frame=reader_frame)
        assert again.meta["space_declared"] and again.meta["space"] == frame.upper()
        np.testing.assert_allclose(again.points, original, atol=1e-5)


def test_point_cloud_writer_tags_ras_and_reads_back(tmp_path):
    points = np.random.default_rng(0).normal(size=(50, 3)) * 30
    out = meshes.write_point_cloud(tmp_path / "cloud.vtk", points)
    assert out.read_bytes().split(b"\n")[1] == b"vtk output SPACE=RAS"
    np.testing.assert_allclose(io.load(out).points, points, atol=1e-5)


def test_warp_uses_the_runs_mesh_frame(tmp_path):
    # otreg warp reads an untagged mesh in the frame the registration read its inputs in
    path, stored = untagged(tmp_path)
    folder = tmp_path / "run"
    folder.mkdir()
    shift = np.eye(4)
    shift[:3, 3] = [1.0, 2.0, 3.0]
    otreg.Transform(shift).save(folder / "transform.npz")
    (folder / "config.resolved.toml").write_text('[input]\nmesh_frame = "ras"\n')
    out = otreg.warp(folder, path, tmp_path / "moved.txt")
    np.testing.assert_allclose(np.loadtxt(out), stored + [1, 2, 3], atol=1e-5)
