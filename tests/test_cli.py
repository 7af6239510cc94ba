"""End-to-end tests of the ``otreg`` command: small inputs and a fast config (a 2-core CPU).

One registration of the sample data (module fixture) serves every test of its outputs,
``evaluate`` and ``warp``; one rerun from its ``config.resolved.toml`` checks reproducibility.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SOURCE, SOURCE_LANDMARKS, TARGET, TARGET_LANDMARKS, otreg_env

import otreg

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]

OUTPUT_FILES = {
    "warped_source.vtk",
    "transform.npz",
    "rigid.txt",
    "rigid_fixed_to_moving.tfm",
    "field_fixed_to_moving.nii.gz",
    "field_moving_to_fixed.nii.gz",
    "transform_fixed_to_moving.h5",
    "transform_moving_to_fixed.h5",
    "metrics.json",
    "run.json",
    "config.resolved.toml",
    "report.html",
    ".otreg",  # the marker: otreg wrote this folder, --overwrite may replace it
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mesh_points(path: Path) -> np.ndarray:
    """Points of a mesh file in RAS (the frame otreg works in)."""
    from otreg.io import meshes

    return meshes.read_mesh_points(path)


# ----------------------------------------------------------------------------- startup
def test_version(run_otreg):
    result = run_otreg("--version", fresh=True)  # a new interpreter, as a user starts it
    assert result.stdout.strip() == f"otreg {otreg.__version__}"


def test_help_lists_commands(run_otreg):
    result = run_otreg("--help", fresh=True)
    for command in ("register", "evaluate", "warp", "report", "config"):
        assert command in result.stdout
    result = run_otreg("register", "--help", fresh=True)
    for option in ("--out", "--config", "--set", "--points", "--overwrite", "--json", "--volume"):
        assert option in result.stdout


def test_no_arguments_shows_help(run_otreg):
    result = run_otreg(check=False, fresh=True)
    assert result.returncode in (0, 2)
    assert "register" in result.stdout + result.stderr


def test_unknown_command_is_a_usage_error(run_otreg):
    result = run_otreg("registr", check=False, fresh=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_import_is_light():
    """``import otreg, otreg.cli`` loads none of the heavy libraries (instant --help)."""
    code = (
        "import otreg, otreg.cli, sys; "
        "heavy = [m for m in ('torch', 'pykeops', 'pyvista', 'vtk', 'nibabel') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_the_command_keeps_numpy_off_huge_pages():
    """The command's process asks numpy not to madvise huge pages (first touches of large
    arrays stalled in compaction); NUMPY_MADVISE_HUGEPAGE set by the user wins."""
    code = (
        "import contextlib, sys, numpy as np\n"
        "from otreg import cli\n"
        "sys.argv = ['otreg', '--version']\n"
        "with contextlib.suppress(SystemExit):\n"
        "    cli.main()\n"
        "print(np._core.multiarray._get_madvise_hugepage())\n"
    )
    pytest.importorskip("numpy._core.multiarray")
    env = {k: v for k, v in otreg_env().items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert done.stdout.split()[-1] == "False", done.stdout + done.stderr
    env["NUMPY_MADVISE_HUGEPAGE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert done.stdout.split()[-1] == "True", done.stdout + done.stderr


# ----------------------------------------------------------------------------- config
def test_config_show_is_toml(run_otreg):
    result = run_otreg("config", "show")
    parsed = tomllib.loads(result.stdout)
    assert otreg.Config.model_validate(parsed) == otreg.Config()


def test_config_show_preset_with_override(run_otreg):
    result = run_otreg("config", "show", "-c", "lung_vessels", "--set", "match.blur=2")
    parsed = tomllib.loads(result.stdout)
    assert parsed["match"]["blur"] == [2.0]
    assert parsed["match"]["reach"] == [
        20.0,
        10.0,
        10.0,
        5.0,
        5.0,
        5.0,
        3.0,
        3.0,
    ]  # from the preset
    assert parsed["rigid"]["blur"] == 4.0


def test_config_presets_lists_every_preset(run_otreg):
    from otreg.config import preset_names

    result = run_otreg("config", "presets")
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert names == preset_names()


# ----------------------------------------------------------------------------- register
@pytest.fixture(scope="module")
def registration(fast_settings, run_otreg, tmp_path_factory):
    """(OUT, parsed --json stdout) of one fast registration of the sample pair."""
    out = tmp_path_factory.mktemp("sample") / "out"
    # the displacement model: tests/test_quality.py runs the preset's svf model
    result = run_otreg(
        "register",
        str(SOURCE),
        str(TARGET),
        "-o",
        str(out),
        *fast_settings,
        "--set",
        "smooth.model=displacement",
        "--json",
        fresh=True,  # one whole run in a new interpreter (the others: tests/forked_cli.py)
    )
    return out, json.loads(result.stdout)


def test_register_json_summary(registration):
    out, summary = registration
    assert summary["out"] == str(out)
    assert (
        summary["residual_after_mm"]
        < summary["residual_after_rigid_mm"]
        < summary["residual_before_mm"]
    )
    points = summary["metrics"]["points"]
    assert set(points) == {"source", "target"}
    assert all(1400 <= n <= 1500 for n in points.values()), points  # at most --points
    assert 0 < summary["transported_mass"] <= 1.2


def test_register_output_files(registration):
    out, _ = registration
    # (evaluation.json: written by the evaluate tests, whichever order they run in)
    assert {p.name for p in out.iterdir()} - {"evaluation.json"} == OUTPUT_FILES
    # no temporary or backup folders left next to OUT
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_warped_source_has_arrays(registration):
    import pyvista as pv

    out, _ = registration
    warped = pv.read(out / "warped_source.vtk")
    source = pv.read(SOURCE)
    assert warped.n_points == source.n_points
    assert warped.point_data["displacement"].shape == (source.n_points, 3)
    confidence = warped.point_data["confidence"]
    assert confidence.shape == (source.n_points,)
    assert np.isfinite(confidence).all() and (confidence >= 0).all()
    assert "radius" in warped.point_data  # the input's arrays are kept
    # positions = source + displacement (the file is RAS, like the input)
    moved = mesh_points(out / "warped_source.vtk")
    np.testing.assert_allclose(
        moved, mesh_points(SOURCE) + warped.point_data["displacement"], atol=1e-3
    )


def test_transform_matches_warped_source(registration):
    out, _ = registration
    transform = otreg.Transform.load(out / "transform.npz")
    expected = transform(mesh_points(SOURCE))
    np.testing.assert_allclose(mesh_points(out / "warped_source.vtk"), expected, atol=1e-3)
    rigid = np.loadtxt(out / "rigid.txt")
    np.testing.assert_allclose(rigid, transform.rigid, atol=1e-8)
    np.testing.assert_allclose(rigid[3], [0, 0, 0, 1])
    np.testing.assert_allclose(rigid[:3, :3] @ rigid[:3, :3].T, np.eye(3), atol=1e-6)


def test_itk_outputs(registration):
    import nibabel as nib

    out, _ = registration
    tfm = (out / "rigid_fixed_to_moving.tfm").read_text()
    assert tfm.startswith("#Insight Transform File V1.0")
    assert "AffineTransform_double_3_3" in tfm
    for name in ("field_fixed_to_moving.nii.gz", "field_moving_to_fixed.nii.gz"):
        image = nib.load(out / name)
        assert image.ndim == 5 and image.shape[3:] == (1, 3)
        assert int(image.header["intent_code"]) == 1006  # Slicer: a displacement field
        assert np.isfinite(np.asarray(image.dataobj)).all()
    for name in ("transform_fixed_to_moving.h5", "transform_moving_to_fixed.h5"):
        assert (out / name).read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


def test_metrics_run_config_report(fast_settings, registration):
    out, summary = registration
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["residual_after"] == summary["metrics"]["residual_after"]
    run = json.loads((out / "run.json").read_text())
    assert run["inputs"]["source"]["sha256"] == sha256(SOURCE)
    assert run["inputs"]["target"]["sha256"] == sha256(TARGET)
    assert run["inputs"]["source"]["path"] == str(SOURCE.resolve())
    assert run["versions"]["otreg"] == otreg.__version__
    assert run["seed"] == 0 and run["device"] == metrics["device"]
    assert "register" in run["argv"]
    # no -c: the preset of vessel clouds with a radius array, the command line's settings on top
    assert run["preset"] == {
        "name": "lung_vessels",
        "chosen_by": "input type: vessel clouds with a 'radius' array",
    }
    assert summary["preset"] == "lung_vessels"
    resolved = (out / "config.resolved.toml").read_text()
    assert resolved.startswith("# from lung_vessels (input type: vessel clouds")
    config = otreg.load_config(out / "config.resolved.toml")
    assert config == otreg.load_config(
        "lung_vessels", [*fast_settings[3::2], "smooth.model=displacement"], input__points=1500
    )
    assert config.match.feature_weights == {"radius": 2.0} and len(config.rounds) == 8
    assert "residual distance" in (out / "report.html").read_text()  # tests/test_report.py
    # transform quality: the displacement model has no inverse of its own (see test_quality.py)
    assert metrics["jacobian"]["grid_spacing_mm"] == 16 and metrics["jacobian"]["points"] > 100
    assert "inverse_consistency_mm" not in metrics


def test_evaluate_tre_improves(run_otreg, registration):
    out, _ = registration
    result = run_otreg(
        "evaluate",
        str(out),
        "--source-landmarks",
        str(SOURCE_LANDMARKS),
        "--target-landmarks",
        str(TARGET_LANDMARKS),
        "--json",
    )
    tre = json.loads(result.stdout)
    assert tre["landmarks"] == 80
    before, after = tre["before"]["mean_mm"], tre["after"]["mean_mm"]
    assert before > 10  # the sample motion: ~14 mm mean
    # measured ~2.0 mm with these settings (2.6 mm with 2000 points and an 8 mm grid)
    assert after < 3.5, tre
    assert after < before / 3
    # the table form prints the same numbers
    table = run_otreg(
        "evaluate",
        str(out),
        "--source-landmarks",
        str(SOURCE_LANDMARKS),
        "--target-landmarks",
        str(TARGET_LANDMARKS),
        "--no-report",
    ).stdout
    assert f"{after:.2f}" in table and f"{before:.2f}" in table


def test_evaluate_mismatched_landmarks(run_otreg, registration, tmp_path):
    out, _ = registration
    fewer = tmp_path / "fewer.txt"
    np.savetxt(fewer, np.loadtxt(TARGET_LANDMARKS)[:10])
    result = run_otreg(
        "evaluate",
        str(out),
        "--source-landmarks",
        str(SOURCE_LANDMARKS),
        "--target-landmarks",
        str(fewer),
        check=False,
    )
    assert result.returncode == 2
    assert str(fewer) in result.stderr and "Traceback" not in result.stderr


def test_evaluate_not_a_registration(run_otreg, tmp_path):
    result = run_otreg(
        "evaluate",
        str(tmp_path),
        "--source-landmarks",
        str(SOURCE_LANDMARKS),
        "--target-landmarks",
        str(TARGET_LANDMARKS),
        check=False,
    )
    assert result.returncode == 2
    assert "transform.npz" in result.stderr and "Traceback" not in result.stderr


def test_warp_landmarks_equals_python_api(run_otreg, registration, tmp_path):
    out, _ = registration
    moved_path = tmp_path / "moved.txt"
    result = run_otreg("warp", str(out), str(SOURCE_LANDMARKS), "-o", str(moved_path))
    assert result.stdout.strip() == str(moved_path)
    landmarks = np.loadtxt(SOURCE_LANDMARKS)
    moved = np.loadtxt(moved_path)
    assert moved.shape == landmarks.shape == (80, 3)
    expected = otreg.Transform.load(out / "transform.npz")(landmarks)
    # the fields sum in float32 (1e-7 relative: 2e-5 mm at 240 mm), in whatever order threads take
    np.testing.assert_allclose(moved, expected, rtol=0, atol=1e-4)

    # an existing output needs --overwrite, and is left alone without it
    again = run_otreg("warp", str(out), str(SOURCE_LANDMARKS), "-o", str(moved_path), check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    np.testing.assert_array_equal(np.loadtxt(moved_path), moved)
    run_otreg(
        "warp",
        str(out / "transform.npz"),
        str(SOURCE_LANDMARKS),
        "-o",
        str(moved_path),
        "--overwrite",
    )
    np.testing.assert_allclose(np.loadtxt(moved_path), expected, rtol=0, atol=1e-4)


def test_rerun_from_resolved_config_reproduces(run_otreg, registration, tmp_path):
    out, _ = registration
    again = tmp_path / "again"
    run_otreg(
        "register",
        str(SOURCE),
        str(TARGET),
        "-o",
        str(again),
        "-c",
        str(out / "config.resolved.toml"),
    )
    settings = lambda folder: (folder / "config.resolved.toml").read_text().split("\n", 1)[1]  # noqa: E731
    assert settings(again) == settings(out)  # the first line says where the config came from
    assert json.loads((again / "run.json").read_text())["preset"]["chosen_by"] == "-c"
    first = otreg.Transform.load(out / "transform.npz")
    second = otreg.Transform.load(again / "transform.npz")
    np.testing.assert_allclose(second.rigid, first.rigid, rtol=0, atol=1e-4)
    np.testing.assert_allclose(
        mesh_points(again / "warped_source.vtk"),
        mesh_points(out / "warped_source.vtk"),
        rtol=0,
        atol=1e-4,
    )


def test_register_overwrite_replaces_folder(run_otreg, registration, tmp_path):
    """--overwrite on an old otreg output folder: the old files are gone, nothing is left
    beside (folders otreg did not write are refused: tests/test_hostile_output.py)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".otreg").write_text("written by otreg\n")  # the marker of otreg's folders
    (out / "stale.txt").write_text("old\n")
    # a quick registration of the landmark sets themselves (80 points each)
    run_otreg(
        "register",
        str(SOURCE_LANDMARKS),
        str(TARGET_LANDMARKS),
        "-o",
        str(out),
        "--overwrite",
        "--set",
        "rigid.principal_axes=false",
        "--set",
        "rigid.iterations=5",
        "--set",
        "solver.max_iter=50",
        "--set",
        "output.dense_field=false",
    )
    names = {p.name for p in out.iterdir()}
    fields = {
        "field_fixed_to_moving.nii.gz",
        "field_moving_to_fixed.nii.gz",
        "transform_fixed_to_moving.h5",
        "transform_moving_to_fixed.h5",
    }
    # a point list is warped to a .vtp point cloud (text cannot carry the arrays)
    assert names == (OUTPUT_FILES - fields - {"warped_source.vtk"}) | {"warped_source.vtp"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# ----------------------------------------------------------------------------- DIR-LAB
@pytest.mark.realdata
def test_dirlab_case1_evaluate(run_otreg, shared_data, tmp_path):
    dirlab = shared_data / "dirlab4dct"
    out = tmp_path / "case1"
    run_otreg(
        "register",
        str(dirlab / "case1_exhale_points.vtk"),
        str(dirlab / "case1_inhale_points.vtk"),
        "-o",
        str(out),
        "-c",
        "lung_points",
        "--set",
        "input.mesh_frame=ras",  # untagged, in the frame of the DIR-LAB landmarks
        "--points",
        "800",
        "--set",
        "rigid.points=800",
        "--set",
        "rigid.iterations=10",
        "--set",
        "rigid.principal_axes=false",
        "--set",
        "solver.max_iter=100",
        "--set",
        "output.grid_spacing=16",
    )
    spacing = ["--spacing", "0.97", "0.97", "2.5"]
    exhale, inhale = dirlab / "case1_300_T50_xyz.txt", dirlab / "case1_300_T00_xyz.txt"
    result = run_otreg(
        "evaluate",
        str(out),
        "--source-landmarks",
        str(exhale),
        "--target-landmarks",
        str(inhale),
        "--format",
        "dirlab",
        *spacing,
        "--json",
    )
    tre = json.loads(result.stdout)
    assert tre["landmarks"] == 300
    assert tre["before"]["mean_mm"] == pytest.approx(3.89, abs=0.02)  # the README's table
    # measured 3.89 -> 2.33 mm with these settings (the README's floor is ~1.0-1.45 mm)
    assert tre["after"]["mean_mm"] < 0.8 * tre["before"]["mean_mm"], tre

    # warp takes DIR-LAB landmarks too, and writes them in mm
    moved = tmp_path / "moved.txt"
    run_otreg("warp", str(out), str(exhale), "-o", str(moved), "--format", "dirlab", *spacing)
    index = np.loadtxt(exhale)
    expected = otreg.Transform.load(out / "transform.npz")((index - 1) * [0.97, 0.97, 2.5])
    np.testing.assert_allclose(np.loadtxt(moved), expected, rtol=0, atol=1e-6)

    # --format dirlab without --spacing is a usage error
    bad = run_otreg(
        "evaluate",
        str(out),
        "--source-landmarks",
        str(exhale),
        "--target-landmarks",
        str(inhale),
        "--format",
        "dirlab",
        check=False,
    )
    assert bad.returncode == 2 and "--spacing" in bad.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_interrupt_exits_130_and_leaves_nothing(tmp_path):
    import signal

    out = tmp_path / "out"
    env = otreg_env()  # this tree's otreg, one thread
    # all 10,000 points and default settings: minutes of work, interrupted once it has begun
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otreg",
            "register",
            str(SOURCE),
            str(TARGET),
            "-o",
            str(out),
            "--points",
            "0",
            "-vv",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # in case we run in bg
    )
    try:
        seen = []
        for line in process.stderr:  # DEBUG log "loaded ..." once both inputs are read
            seen.append(line)
            if "loaded" in line and sum("loaded" in s for s in seen) == 2:
                break
        assert process.poll() is None, "".join(seen)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, (stdout, stderr)
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []
