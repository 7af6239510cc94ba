"""``otreg register`` without ``-c`` picks the preset of the input type (otreg.presets); ``-c``
overrides it. Tiny inputs and a fast config: the choice is what is tested, not accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import FAST as QUICK_CLI

import otreg
from otreg.presets import input_kind, preset_for

pv = pytest.importorskip("pyvista")
nib = pytest.importorskip("nibabel")

# a few seconds per registration; the presets' choice is what is tested, not the outputs
FAST = [*QUICK_CLI, "--set", "output.dense_field=false", "--set", "output.jacobian=false"]


def cloud_with_radius(folder: Path) -> Path:
    cloud = pv.PolyData(np.random.default_rng(0).uniform(0, 60, size=(400, 3)))
    cloud.point_data["radius"] = np.full(400, 1.5)
    cloud.save(folder / "vessels.vtp")
    return folder / "vessels.vtp"


def point_list(folder: Path) -> Path:
    np.savetxt(folder / "points.txt", np.random.default_rng(1).uniform(0, 60, size=(400, 3)))
    return folder / "points.txt"


def surface(folder: Path) -> Path:
    pv.Sphere(radius=30, theta_resolution=20, phi_resolution=20).save(folder / "surface.stl")
    return folder / "surface.stl"


def mask(folder: Path) -> Path:
    data = np.zeros((20, 20, 20), dtype=np.uint8)
    data[4:16, 5:15, 3:17] = 1
    nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.5, 1.0])).to_filename(str(folder / "mask.nii.gz"))
    return folder / "mask.nii.gz"


KINDS = {  # input: (file maker, kind, preset)
    "vessels": (cloud_with_radius, "vessels", "lung_vessels"),
    "points": (point_list, "points", "lung_points"),
    "surface": (surface, "surface", "lung_surface"),
    "mask": (mask, "mask", "lung_mask"),
}


@pytest.mark.parametrize("name", list(KINDS))
def test_input_kind(name, tmp_path):
    make, kind, preset = KINDS[name]
    cloud = otreg.load(make(tmp_path))
    assert input_kind(cloud) == kind
    assert preset_for(cloud, cloud)[0] == preset


def test_vessels_need_radius_in_both_clouds(tmp_path):
    vessels = otreg.load(cloud_with_radius(tmp_path))
    points = otreg.load(point_list(tmp_path))
    assert preset_for(vessels, points)[0] == "lung_points"


@pytest.mark.parametrize(
    "name", ["points", "surface", "mask"]
)  # vessels: test_cli.py's registration
def test_register_picks_the_preset_of_the_input(run_otreg, name, tmp_path):
    make, _, preset = KINDS[name]
    path = make(tmp_path)
    out = tmp_path / "out"
    result = run_otreg(
        "register", str(path), str(path), "-o", str(out), *FAST, "--json", "-v", cwd=tmp_path
    )
    assert json.loads(result.stdout)["preset"] == preset
    assert f"config: {preset} (input type" in result.stderr  # logged
    run = json.loads((out / "run.json").read_text())
    assert run["preset"]["name"] == preset
    config = otreg.load_config(out / "config.resolved.toml")
    assert config.rounds == otreg.load_config(preset).rounds


def test_config_option_overrides_the_choice(run_otreg, tmp_path):
    path = cloud_with_radius(tmp_path)
    out = tmp_path / "out"
    result = run_otreg(
        "register",
        str(path),
        str(path),
        "-o",
        str(out),
        "-c",
        "lung_points",
        *FAST,
        "--json",
        cwd=tmp_path,
    )
    assert json.loads(result.stdout)["preset"] == "lung_points"
    assert json.loads((out / "run.json").read_text())["preset"] == {
        "name": "lung_points",
        "chosen_by": "-c",
    }
    assert otreg.load_config(out / "config.resolved.toml").match.feature_weights == {}
