"""Hostile mesh and point files, written byte by byte: one message and exit 2, never a crash
(VTK used to segfault or abort on some), a hang (a named pipe) or a memory blow-up (a link
to /dev/zero). Each case runs the real command in a subprocess, so a crash fails the case
instead of killing the test session."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import FAST, assert_one_error, random_points, run_otreg, write_txt

VERTICES = np.random.default_rng(0).uniform(0, 100, (30, 3))


def _ply_ascii(path: Path, n_declared: int, faces: list[list[int]]) -> Path:
    header = [
        "ply",
        "format ascii 1.0",
        f"element vertex {n_declared}",
        "property float x",
        "property float y",
        "property float z",
        f"element face {len(faces)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    body = [" ".join(f"{v:.3f}" for v in p) for p in VERTICES]
    body += [" ".join(map(str, [len(f), *f])) for f in faces]
    path.write_text("\n".join(header + body) + "\n")
    return path


def _ply_binary(
    path: Path, faces: list[list[int]], *, n_faces: int | None = None, count_type="uchar"
) -> Path:
    header = (
        "ply\nformat binary_little_endian 1.0\nelement vertex 30\n"
        "property float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces) if n_faces is None else n_faces}\n"
        f"property list {count_type} int vertex_indices\nend_header\n"
    ).encode()
    body = VERTICES.astype("<f4").tobytes()
    for face in faces:
        body += struct.pack("<B" if count_type == "uchar" else "<i", len(face) % 256)
        body += np.array(face, "<i4").tobytes()
    path.write_bytes(header + body)
    return path


def _ply_negative_list_length(path: Path) -> Path:
    header = (
        b"ply\nformat binary_little_endian 1.0\nelement vertex 30\nproperty float x\n"
        b"property float y\nproperty float z\nelement face 1\n"
        b"property list int int vertex_indices\nend_header\n"
    )
    path.write_bytes(header + VERTICES.astype("<f4").tobytes() + struct.pack("<i", -3) + bytes(12))
    return path


def _vtk_ascii(path: Path, n_points: int | str, cells: str, dataset: str = "POLYDATA") -> Path:
    points = "\n".join(" ".join(f"{c:.3f}" for c in p) for p in VERTICES)
    path.write_text(
        f"# vtk DataFile Version 3.0\nx\nASCII\nDATASET {dataset}\n"
        f"POINTS {n_points} float\n{points}\n{cells}"
    )
    return path


def _obj(path: Path, extra: str) -> Path:
    path.write_text("".join(f"v {x:.3f} {y:.3f} {z:.3f}\n" for x, y, z in VERTICES) + extra)
    return path


def _vtp_declaring(path: Path, n_points: str) -> Path:
    path.write_text(
        '<?xml version="1.0"?>\n<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian">\n'
        f'<PolyData><Piece NumberOfPoints="{n_points}" NumberOfVerts="0" NumberOfLines="0" '
        'NumberOfStrips="0" NumberOfPolys="0"><Points>'
        '<DataArray type="Float32" NumberOfComponents="3" format="ascii">0 0 0 1 1 1</DataArray>'
        "</Points></Piece></PolyData></VTKFile>\n"
    )
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _link_to(target: str):
    def make(path: Path) -> Path:
        os.symlink(target, path)
        return path

    return make


# name: (file name, make(path), keywords of the message)
CASES = {
    "ply_face_index_beyond_vertices": (
        "a.ply",
        lambda p: _ply_ascii(p, 30, [[0, 1, 99]]),
        ["vertex 99", "30 vertices"],
    ),
    "ply_negative_face_index": (
        "a.ply",
        lambda p: _ply_ascii(p, 30, [[0, 1, -5]]),
        ["vertex -5"],
    ),
    "ply_negative_vertex_count": (
        "a.ply",
        lambda p: _ply_ascii(p, -5, [[0, 1, 2]]),
        ["element vertex -5"],
    ),
    "ply_binary_face_index_beyond_vertices": (
        "a.ply",
        lambda p: _ply_binary(p, [[0, 1, 2], [0, 1, 100000]]),
        ["face 1", "vertex 100000"],
    ),
    "ply_binary_negative_face_index": (
        "a.ply",
        lambda p: _ply_binary(p, [[0, 1, -1000000]]),
        ["vertex -1000000"],
    ),
    "ply_binary_negative_face_count": (
        "a.ply",
        lambda p: _ply_binary(p, [[0, 1, 2]], n_faces=-1),
        ["element face -1"],
    ),
    "ply_binary_negative_list_length": ("a.ply", _ply_negative_list_length, ["length -3"]),
    "ply_binary_mixed_faces_index_beyond": (
        "a.ply",
        lambda p: _ply_binary(p, [[0, 1, 2], [0, 1, 2, 3], [4, 5, 77]], count_type="int"),
        ["face 2", "vertex 77"],
    ),
    "ply_huge_vertex_count": (
        "a.ply",
        lambda p: (
            p.write_bytes(
                b"ply\nformat binary_little_endian 1.0\nelement vertex 4000000000000\n"
                b"property float x\nproperty float y\nproperty float z\nend_header\n"
            )
            and p
        ),
        ["truncated"],
    ),
    "ply_unknown_header_keyword": (  # found by fuzzing: VTK segfaulted
        "a.ply",
        lambda p: (
            p.write_bytes(
                _ply_ascii(p, 30, [[0, 1, 2]])
                .read_bytes()
                .replace(b"element vertex", b"elemen\x15Zex")
            )
            and p
        ),
        ["malformed PLY header line"],
    ),
    "ply_property_before_element": (
        "a.ply",
        lambda p: (
            p.write_text(
                "ply\nformat ascii 1.0\nproperty float x\nelement vertex 1\n"
                "property float y\nend_header\n1 2\n"
            )
            and p
        ),
        ["malformed PLY header line"],
    ),
    "ply_face_without_vertex_indices": (  # found by fuzzing: VTK aborted (invalid free)
        "a.ply",
        lambda p: (
            p.write_bytes(
                _ply_ascii(p, 30, [[0, 1, 2]])
                .read_bytes()
                .replace(b"vertex_indices", b"vertex_indicez")
            )
            and p
        ),
        ["'face' element without", "vertex_indices"],
    ),
    "obj_face_index_beyond_vertices": ("a.obj", lambda p: _obj(p, "f 1 2 99\n"), ["beyond"]),
    "obj_face_index_zero": ("a.obj", lambda p: _obj(p, "f 0 1 2\n"), ["index"]),
    "obj_negative_index_beyond": ("a.obj", lambda p: _obj(p, "f -1 -2 -99\n"), ["index"]),
    "obj_bad_vertex": ("a.obj", lambda p: _obj(p, "v 1 abc 3\nf 1 2 3\n"), ["vertex"]),
    "vtk_polygon_index_beyond_points": (
        "a.vtk",
        lambda p: _vtk_ascii(p, 30, "POLYGONS 1 4\n3 0 1 99\n"),
        ["POLYGONS cell 0", "30 points"],
    ),
    "vtk_polygon_negative_index": (
        "a.vtk",
        lambda p: _vtk_ascii(p, 30, "POLYGONS 1 4\n3 0 1 -7\n"),
        ["POLYGONS cell 0"],
    ),
    "vtk_negative_cell_size": (
        "a.vtk",
        lambda p: _vtk_ascii(p, 30, "VERTICES 1 2\n-5 0\n"),
        ["VERTICES cell 0"],
    ),
    "vtk_negative_cell_count": (
        "a.vtk",
        lambda p: _vtk_ascii(p, 30, "LINES -1 3\n2 0 1\n"),
        ["malformed LINES"],
    ),
    "vtk_unknown_cell_type": (
        "a.vtk",
        lambda p: _vtk_ascii(
            p, 30, "CELLS 1 5\n4 0 1 2 3\nCELL_TYPES 1\n9999\n", "UNSTRUCTURED_GRID"
        ),
        ["cell type 9999"],
    ),
    "vtk_ugrid_index_beyond_points": (
        "a.vtk",
        lambda p: _vtk_ascii(
            p, 30, "CELLS 1 5\n4 0 1 2 999\nCELL_TYPES 1\n10\n", "UNSTRUCTURED_GRID"
        ),
        ["CELLS cell 0"],
    ),
    "vtk_offsets_layout_index_beyond": (
        "a.vtk",
        lambda p: _vtk_ascii(
            p,
            30,
            "POLYGONS 2 3\nOFFSETS vtktypeint64\n0 3\nCONNECTIVITY vtktypeint64\n0 1 64\n",
        ),
        ["POLYGONS", "beyond"],
    ),
    "vtk_garbled_version": (  # found by fuzzing: VTK segfaulted on a binary file like this
        "a.vtk",
        lambda p: (
            p.write_bytes(
                _vtk_ascii(p, 30, "").read_bytes().replace(b"Version 3.0", b"Version \xde.\x87")
            )
            and p
        ),
        ["cannot be read as legacy VTK", "first line"],
    ),
    "vtk_binary_huge_point_count": (
        "a.vtk",
        lambda p: (
            p.write_bytes(
                b"# vtk DataFile Version 3.0\nx\nBINARY\nDATASET POLYDATA\nPOINTS 2000000000 float\n"
                + VERTICES.astype(">f4").tobytes()
            )
            and p
        ),
        ["truncated", "2000000000"],
    ),
    "vtk_huge_cell_count": (
        "a.vtk",
        lambda p: _vtk_ascii(p, 30, "POLYGONS 2000000000 8000000000\n3 0 1 2\n"),
        ["POLYGONS", "memory"],
    ),
    "vtp_huge_point_count": (
        "a.vtp",
        lambda p: _vtp_declaring(p, "3000000000000"),
        ["memory", "memory_limit_gb"],
    ),
    "vtp_negative_point_count": ("a.vtp", lambda p: _vtp_declaring(p, "-2"), ["NumberOfPoints"]),
    "stl_huge_triangle_count": (
        "a.stl",
        lambda p: p.write_bytes(bytes(80) + struct.pack("<I", 0xFFFFFFFF) + bytes(100)) and p,
        ["truncated"],
    ),
    "fifo": ("pipe.txt", _fifo, ["named pipe"]),
    "link_to_dev_zero_txt": ("zero.txt", _link_to("/dev/zero"), ["character device"]),
    "link_to_dev_zero_npy": ("zero.npy", _link_to("/dev/zero"), ["character device"]),
    "link_to_dev_zero_vtk": ("zero.vtk", _link_to("/dev/zero"), ["character device"]),
    "link_to_dev_zero_nii": ("zero.nii", _link_to("/dev/zero"), ["character device"]),
    "broken_link": ("gone.txt", _link_to("/nonexistent/file.txt"), ["broken"]),
}


@pytest.fixture(scope="module")
def good_target(tmp_path_factory) -> Path:
    return write_txt(tmp_path_factory.mktemp("target") / "target.txt", random_points(200, seed=5))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX files")
@pytest.mark.parametrize("case", list(CASES))
def test_hostile_file_gives_one_message(case, tmp_path, good_target):
    name, make, keywords = CASES[case]
    bad = make(tmp_path / name)
    before = bad.read_bytes() if bad.is_file() and not bad.is_symlink() else None
    out = tmp_path / "out"
    result = run_otreg(
        "register", str(bad), str(good_target), "-o", str(out), *FAST, cwd=tmp_path, timeout=120
    )
    assert_one_error(result, str(bad), *keywords)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert before is None or bad.read_bytes() == before  # the input untouched


def test_landmarks_from_a_fifo_are_refused_without_blocking(tmp_path):
    from otreg.errors import InputError
    from otreg.io import read_landmarks

    pipe = _fifo(tmp_path / "landmarks.txt")
    with pytest.raises(InputError, match="named pipe"):
        read_landmarks(pipe)
