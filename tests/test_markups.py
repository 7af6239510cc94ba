"""3D Slicer markups (.fcsv, .mrk.json) as landmarks: read, warped, evaluated.

The example files follow the structure of the files Slicer itself writes: Slicer 5 (.fcsv
with numeric ids and ``# CoordinateSystem = LPS``; .mrk.json with the markups schema),
and Slicer 4.10 (.fcsv with ``CoordinateSystem = 0``, i.e. RAS, and node-name ids).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import otreg
from otreg.errors import InputError, OutputError
from otreg.io import read_landmarks
from otreg.io.markups import read_markups, write_markups
from otreg.transforms import Transform

POINTS_LPS = np.array([[-28.5, 12.25, 60.75], [10.0, -3.5, 40.0], [0.125, 44.0, -7.5]])
POINTS_RAS = POINTS_LPS * [-1, -1, 1]

FCSV_5 = """# Markups fiducial file version = 5.6
# CoordinateSystem = LPS
# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID
1,-28.5,12.25,60.75,0,0,0,1,1,1,0,F-1,,vtkMRMLScalarVolumeNode1
2,10,-3.5,40,0,0,0,1,1,1,0,F-2,"carina, left",vtkMRMLScalarVolumeNode1
3,0.125,44,-7.5,0,0,0,1,1,1,0,F-3,,vtkMRMLScalarVolumeNode1
"""

FCSV_410_RAS = """# Markups fiducial file version = 4.10
# CoordinateSystem = 0
# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID
vtkMRMLMarkupsFiducialNode_0,28.5,-12.25,60.75,0,0,0,1,1,1,0,F-1,,
vtkMRMLMarkupsFiducialNode_1,-10,3.5,40,0,0,0,1,1,1,0,F-2,,
vtkMRMLMarkupsFiducialNode_2,-0.125,-44,-7.5,0,0,0,1,1,1,0,F-3,,
"""


def mrk_json(points: np.ndarray, frame: str = "LPS", status: str = "defined") -> str:
    control_points = [
        {
            "id": str(i + 1),
            "label": f"F-{i + 1}",
            "description": "",
            "associatedNodeID": "vtkMRMLScalarVolumeNode1",
            "position": [float(v) for v in p],
            "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
            "selected": True,
            "locked": False,
            "visibility": True,
            "positionStatus": status if i == 1 else "defined",
        }
        for i, p in enumerate(points)
    ]
    markup = {
        "type": "Fiducial",
        "coordinateSystem": frame,
        "coordinateUnits": "mm",
        "locked": False,
        "fixedNumberOfControlPoints": False,
        "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": len(points),
        "controlPoints": control_points,
        "measurements": [],
        "display": {"visibility": True, "opacity": 1.0, "color": [0.4, 1.0, 1.0]},
    }
    schema = (
        "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
        "Resources/Schema/markups-schema-v1.0.3.json#"
    )
    return json.dumps({"@schema": schema, "markups": [markup]}, indent=4)


@pytest.fixture
def files(tmp_path):
    out = {
        "fcsv": tmp_path / "points.fcsv",
        "fcsv_ras": tmp_path / "old.fcsv",
        "json": tmp_path / "points.mrk.json",
        "json_ras": tmp_path / "ras.mrk.json",
    }
    out["fcsv"].write_text(FCSV_5)
    out["fcsv_ras"].write_text(FCSV_410_RAS)
    out["json"].write_text(mrk_json(POINTS_LPS))
    out["json_ras"].write_text(mrk_json(POINTS_RAS, "RAS"))
    return out


@pytest.mark.parametrize("name", ["fcsv", "fcsv_ras", "json", "json_ras"])
def test_every_control_point_read_in_ras(files, name):
    # the first row is a point, not a header (it used to be skipped)
    np.testing.assert_allclose(read_landmarks(files[name]), POINTS_RAS)


@pytest.mark.parametrize("name", ["fcsv", "fcsv_ras", "json"])
def test_write_round_trip_keeps_format_frame_and_the_rest(files, name, tmp_path):
    path = files[name]
    out = tmp_path / f"moved{''.join(path.suffixes)}"
    moved = POINTS_RAS + [1.0, -2.0, 3.0]
    write_markups(path, out, moved)
    np.testing.assert_allclose(read_markups(out), moved, atol=1e-6)
    if name.startswith("fcsv"):
        old, new = path.read_text().splitlines(), out.read_text().splitlines()
        assert [line for line in new if line.startswith("#")] == old[:3]  # frame line kept
        assert '"carina, left"' in out.read_text() or name == "fcsv_ras"
        assert [line.split(",")[11] for line in new[3:]] == ["F-1", "F-2", "F-3"]
    else:
        document = json.loads(out.read_text())
        markup = document["markups"][0]
        assert markup["coordinateSystem"] == "LPS" and markup["display"]["opacity"] == 1.0
        np.testing.assert_allclose(
            [p["position"] for p in markup["controlPoints"]], moved * [-1, -1, 1]
        )


def _registration(tmp_path, shift=(5.0, -3.0, 12.0)) -> tuple:
    rigid = np.eye(4)
    rigid[:3, 3] = shift
    folder = tmp_path / "run"
    folder.mkdir()
    Transform(rigid).save(folder / "transform.npz")
    return folder, np.asarray(shift)


@pytest.mark.parametrize("name", ["fcsv", "json"])
def test_warp_keeps_the_markups_format(files, name, tmp_path):
    folder, shift = _registration(tmp_path)
    path = files[name]
    out = otreg.warp(folder, path, tmp_path / f"warped{''.join(path.suffixes)}")
    np.testing.assert_allclose(read_markups(out), POINTS_RAS + shift, atol=1e-6)
    as_text = otreg.warp(folder, path, tmp_path / "warped.txt")
    np.testing.assert_allclose(np.loadtxt(as_text), POINTS_RAS + shift, atol=1e-6)
    with pytest.raises(OutputError, match="keep their format"):
        otreg.warp(folder, path, tmp_path / ("x.mrk.json" if name == "fcsv" else "x.fcsv"))


def test_evaluate_reads_every_fcsv_landmark(files, tmp_path):
    folder, shift = _registration(tmp_path)
    target = tmp_path / "target.mrk.json"
    target.write_text(mrk_json(POINTS_LPS + shift * [-1, -1, 1]))
    result = otreg.evaluate(folder, files["fcsv"], target, jacobian=False)
    assert result["landmarks"] == 3
    assert result["before"]["mean_mm"] == pytest.approx(np.linalg.norm(shift))
    assert result["after"]["max_mm"] < 1e-6


def test_bad_markups_are_named(tmp_path):
    unplaced = tmp_path / "unplaced.mrk.json"
    unplaced.write_text(mrk_json(POINTS_LPS, status="undefined"))
    with pytest.raises(InputError, match=r"controlPoints\[1\].*defined"):
        read_landmarks(unplaced)
    empty = tmp_path / "empty.fcsv"
    empty.write_text(FCSV_5.split("1,")[0])
    with pytest.raises(InputError, match="no control points"):
        read_landmarks(empty)
    broken = tmp_path / "broken.fcsv"
    broken.write_text(FCSV_5.replace("10,-3.5", "ten,-3.5"))
    with pytest.raises(InputError, match="line 5"):
        read_landmarks(broken)
    not_markups = tmp_path / "other.json"
    not_markups.write_text('{"points": []}')
    with pytest.raises(InputError, match="not a Slicer markups file"):
        read_landmarks(not_markups)
