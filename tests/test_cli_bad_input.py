"""``otreg register`` on bad inputs: exit code 2, one clear message, nothing left behind.

Each case builds a small bad file in ``tmp_path`` and runs the real command in a subprocess
(``python -m otreg``), because ``otreg.cli.main`` is what maps errors onto exit codes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import FAST, random_points, write_txt

pv = pytest.importorskip("pyvista")
nib = pytest.importorskip("nibabel")


# Settings that make a registration fast, should a bad input ever get through to one.
def missing(tmp: Path) -> Path:
    return tmp / "does_not_exist.vtk"


def unknown_extension(tmp: Path) -> Path:
    return write_txt(tmp / "cloud.xyz", random_points(50))


def random_bytes_vtk(tmp: Path) -> Path:
    path = tmp / "garbage.vtk"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def truncated_ply(tmp: Path) -> Path:
    path = tmp / "truncated.ply"
    pv.Sphere(theta_resolution=12, phi_resolution=12).save(path, binary=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def empty_mesh(tmp: Path) -> Path:
    path = tmp / "empty.vtp"
    pv.PolyData().save(path)
    return path


def empty_mask(tmp: Path) -> Path:
    path = tmp / "empty_mask.nii.gz"
    nib.Nifti1Image(np.zeros((8, 8, 8), dtype=np.int16), np.eye(4)).to_filename(str(path))
    return path


def three_points(tmp: Path) -> Path:
    return write_txt(tmp / "three.txt", random_points(3))


def nan_coordinates(tmp: Path) -> Path:
    path = tmp / "nan.txt"
    lines = [f"{x:.3f} {y:.3f} {z:.3f}" for x, y, z in random_points(20)]
    lines[7] = "1.0 nan 3.0"
    path.write_text("\n".join(lines) + "\n")
    return path


def weighted_vtp(tmp: Path, name: str, weights: np.ndarray) -> Path:
    cloud = pv.PolyData(random_points(len(weights)))
    cloud.point_data["w"] = weights
    path = tmp / name
    cloud.save(path)
    return path


def negative_weights(tmp: Path) -> Path:
    w = np.ones(50)
    w[[3, 10]] = -0.5
    return weighted_vtp(tmp, "negative_w.vtp", w)


def zero_weights(tmp: Path) -> Path:
    return weighted_vtp(tmp, "zero_w.vtp", np.zeros(50))


def mask_4d(tmp: Path) -> Path:
    data = np.zeros((8, 8, 8, 3), dtype=np.int16)
    data[2:6, 2:6, 2:6, :] = 1
    path = tmp / "four_d.nii.gz"
    nib.Nifti1Image(data, np.eye(4)).to_filename(str(path))
    return path


def binary_mask(tmp: Path) -> Path:
    data = np.zeros((10, 10, 10), dtype=np.uint8)
    data[2:8, 2:8, 2:8] = 1
    path = tmp / "mask.nii.gz"
    nib.Nifti1Image(data, np.eye(4)).to_filename(str(path))
    return path


def plain_points(tmp: Path) -> Path:
    return write_txt(tmp / "plain.txt", random_points(50))


# name: (make the bad source file, extra options, keywords the message must hold)
CASES = {
    "missing": (missing, [], ["no such file"]),
    "unknown_extension": (unknown_extension, [], ["unsupported file type", ".xyz"]),
    "random_bytes_vtk": (random_bytes_vtk, [], ["read"]),
    "truncated_ply": (truncated_ply, [], ["truncated"]),
    "empty_mesh": (empty_mesh, [], ["empty", "0 points"]),
    "empty_mask": (empty_mask, [], ["no voxel"]),
    "three_points": (three_points, [], ["3 point", "at least 4"]),
    "nan_coordinates": (nan_coordinates, [], ["nan"]),
    "negative_weights": (negative_weights, ["--weight-by", "w"], ["negative", "'w'"]),
    "zero_weights": (zero_weights, ["--weight-by", "w"], ["weight 0", "'w'"]),
    "weight_by_absent_array": (
        zero_weights,
        ["--weight-by", "radius"],
        ["no point array", "'radius'"],
    ),
    "feature_array_absent": (
        plain_points,
        ["--set", "match.feature_weights.radius=1"],
        ["no point array 'radius'", "match.feature_weights"],
    ),
    "4d_without_volume": (mask_4d, [], ["4d", "volume"]),
    "4d_volume_out_of_range": (mask_4d, ["--volume", "5"], ["volume=5", "out of range"]),
    "label_not_in_mask": (binary_mask, ["--label", "7"], ["label 7", "not found"]),
}


def assert_one_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, no traceback, one 'otreg: error:' line holding every needle (any case)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("otreg: error:")]
    assert len(errors) == 1 and len(lines) == 1, result.stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])
    return errors[0]


def assert_nothing_left(tmp: Path, out: Path) -> None:
    assert not out.exists()
    leftovers = [p.name for p in tmp.iterdir() if p.name.startswith(f".{out.name}.")]
    assert leftovers == []


@pytest.fixture(scope="module")
def valid_target(tmp_path_factory) -> Path:
    """200 random points: a good file for the other argument."""
    return write_txt(tmp_path_factory.mktemp("target") / "target.txt", random_points(200, seed=5))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_source(run_otreg, case, tmp_path, valid_target):
    make, options, keywords = CASES[case]
    bad = make(tmp_path)
    out = tmp_path / "out"
    result = run_otreg(
        "register",
        str(bad),
        str(valid_target),
        "-o",
        str(out),
        *options,
        *FAST,
        cwd=tmp_path,
        check=False,
    )
    message = assert_one_error(result, str(bad), *keywords)
    assert str(valid_target) not in message  # the good file is not blamed
    assert_nothing_left(tmp_path, out)


def test_bad_target_is_named(run_otreg, tmp_path, valid_target):
    """The offending file is named whichever side it is on."""
    bad = three_points(tmp_path)
    out = tmp_path / "out"
    result = run_otreg(
        "register", str(valid_target), str(bad), "-o", str(out), *FAST, cwd=tmp_path, check=False
    )
    assert_one_error(result, str(bad), "at least 4")
    assert_nothing_left(tmp_path, out)


@pytest.mark.parametrize(
    "setting, keywords",
    [
        ("match.blurr=2", ["unknown key", "match.blurr"]),
        ("solver.scaling=2", ["solver.scaling", "less than 1"]),
        ("match.blur=-1", ["match.blur", "greater than 0"]),
        ("solver.tol=abc", ["solver.tol", "abc"]),
        ("nodot", ["nodot", "section.key=value"]),
    ],
)
def test_bad_config_setting(run_otreg, setting, keywords, tmp_path, valid_target):
    out = tmp_path / "out"
    result = run_otreg(
        "register",
        str(valid_target),
        str(valid_target),
        "-o",
        str(out),
        *FAST,
        "--set",
        setting,
        cwd=tmp_path,
        check=False,
    )
    assert_one_error(result, *keywords)
    assert_nothing_left(tmp_path, out)


def test_bad_config_file_is_named(run_otreg, tmp_path, valid_target):
    config = tmp_path / "my config.toml"
    config.write_text("[match]\nblur = 2.0\nreeach = 10.0\n")
    out = tmp_path / "out"
    result = run_otreg(
        "register",
        str(valid_target),
        str(valid_target),
        "-o",
        str(out),
        "-c",
        str(config),
        *FAST,
        cwd=tmp_path,
        check=False,
    )
    assert_one_error(result, str(config), "unknown key", "match.reeach")
    assert_nothing_left(tmp_path, out)


def test_missing_config_file(run_otreg, tmp_path, valid_target):
    out = tmp_path / "out"
    result = run_otreg(
        "register",
        str(valid_target),
        str(valid_target),
        "-o",
        str(out),
        "-c",
        "no_such_preset",
        *FAST,
        cwd=tmp_path,
        check=False,
    )
    assert_one_error(result, "no_such_preset", "lung_vessels")  # names the presets there are
    assert_nothing_left(tmp_path, out)


def test_existing_output_folder_needs_overwrite(run_otreg, tmp_path, valid_target):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old result\n")
    (out / "sub").mkdir()
    (out / "sub" / "x.txt").write_text("x\n")
    before = sorted(
        (p.relative_to(out).as_posix(), p.is_file() and p.read_text()) for p in out.rglob("*")
    )
    result = run_otreg(
        "register",
        str(valid_target),
        str(valid_target),
        "-o",
        str(out),
        *FAST,
        cwd=tmp_path,
        check=False,
    )
    assert_one_error(result, str(out), "--overwrite")
    after = sorted(
        (p.relative_to(out).as_posix(), p.is_file() and p.read_text()) for p in out.rglob("*")
    )
    assert after == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


def test_output_is_a_file(run_otreg, tmp_path, valid_target):
    out = tmp_path / "out"
    out.write_text("not a folder\n")
    result = run_otreg(
        "register",
        str(valid_target),
        str(valid_target),
        "-o",
        str(out),
        *FAST,
        cwd=tmp_path,
        check=False,
    )
    assert_one_error(result, str(out), "not a folder")
    assert out.read_text() == "not a folder\n"
