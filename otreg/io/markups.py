"""3D Slicer markups: point lists as ``.fcsv`` (CSV) or ``.mrk.json`` (JSON) files.

- ``.fcsv``: ``#`` header lines, among them ``# CoordinateSystem = LPS`` (or ``RAS``; the
  numbers 0 = RAS, 1 = LPS of Slicer 4.x) and ``# columns = id,x,y,z,...``, then one CSV row
  per control point: id, x, y, z, orientation, flags, label, description, node id. Files
  without a CoordinateSystem line are from Slicer < 4.11, which wrote RAS.
- ``.mrk.json``: ``{"markups": [{"coordinateSystem": "LPS", "coordinateUnits": "mm",
  "controlPoints": [{"position": [x, y, z], "positionStatus": "defined", ...}]}]}``.

Points come back in world RAS mm, in file order (all markups of a JSON file, in order).
Writing a warped copy keeps everything of the input (labels, descriptions, display) and its
frame, with new positions only.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .atomic import write_text_atomic
from .frames import from_ras, to_ras

log = logging.getLogger(__name__)

#: file name endings of Slicer markups (lower case)
MARKUPS_SUFFIXES = (".fcsv", ".mrk.json", ".json")

_FCSV_FRAMES = {"RAS": "RAS", "LPS": "LPS", "0": "RAS", "1": "LPS"}


def is_markups(path: str | Path) -> bool:
    """Whether ``path`` is named as a Slicer markups file (.fcsv, .mrk.json or .json)."""
    name = Path(path).name.lower()
    return name.endswith(MARKUPS_SUFFIXES)


def markups_format(path: str | Path) -> str:
    """ "fcsv" or "json"."""
    return "fcsv" if Path(path).name.lower().endswith(".fcsv") else "json"


def read_markups(path: str | Path) -> np.ndarray:
    """(N, 3) float64 RAS mm control points of a Slicer markups file, in file order.

    Raises:
        InputError: unreadable file, no control points, a row or point without a position,
            an unknown coordinate system or unit.
    """
    path = Path(path)
    text = _read_text(path)
    if markups_format(path) == "fcsv":
        frame, rows = _parse_fcsv(path, text)
        points = np.array([row[1] for row in rows], dtype=np.float64).reshape(-1, 3)
        return to_ras(points, frame)
    return np.array(
        [
            to_ras(np.asarray(position, dtype=np.float64)[None], frame)[0]
            for frame, position, _ in _json_points(path, _parse_json(path, text))
        ]
    )


def write_markups(path_in: str | Path, path_out: str | Path, points_ras: np.ndarray) -> Path:
    """Write a copy of the markups file ``path_in`` with its control points at ``points_ras``
    ((N, 3) RAS mm, the order :func:`read_markups` gave), in the input's format and frame.

    Raises:
        OutputError: ``path_out`` is not of ``path_in``'s format.
    """
    from ..errors import OutputError

    path_in, path_out = Path(path_in), Path(path_out)
    if markups_format(path_in) != markups_format(path_out) or not is_markups(path_out):
        raise OutputError(
            f"{path_out}: warped markups keep their format: write {path_in.name}'s warped copy "
            f"as {'.fcsv' if markups_format(path_in) == 'fcsv' else '.mrk.json'} (or .txt)"
        )
    points = np.asarray(points_ras, dtype=np.float64)
    text = _read_text(path_in)
    if markups_format(path_in) == "fcsv":
        frame, rows = _parse_fcsv(path_in, text)
        stored = from_ras(points, frame)
        lines = text.splitlines()
        for (line_index, _, fields, columns), xyz in zip(rows, stored):
            for column, value in zip(columns, xyz):
                fields[column] = f"{value:.6f}"
            out = io.StringIO()
            csv.writer(out, lineterminator="").writerow(fields)
            lines[line_index] = out.getvalue()
        return write_text_atomic(path_out, "\n".join(lines) + "\n")
    document = _parse_json(path_in, text)
    for (frame, _, point), xyz in zip(_json_points(path_in, document), points):
        point["position"] = [float(v) for v in from_ras(xyz[None], frame)[0]]
    return write_text_atomic(path_out, json.dumps(document, indent=4) + "\n")


# ----------------------------------------------------------------------------- parsing
def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "is not a file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, "is not a text file (cannot be decoded as UTF-8)") from None
    except OSError as err:
        raise InputError(path, f"cannot be read: {err.strerror or err}") from None


def _parse_fcsv(path: Path, text: str) -> tuple[str, list]:
    """(frame, [(line index, (x, y, z), fields, (x, y, z column indices))])."""
    frame, columns = None, ["id", "x", "y", "z"]
    rows = []
    for index, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if stripped.startswith("#"):
            key, _, value = stripped.lstrip("#").partition("=")
            key, value = key.strip().lower(), value.strip()
            if key == "coordinatesystem":
                if value.upper() not in _FCSV_FRAMES:
                    raise InputError(
                        path, f"unknown CoordinateSystem {value!r} (expected LPS or RAS)"
                    )
                frame = _FCSV_FRAMES[value.upper()]
            elif key == "columns":
                columns = [c.strip().lower() for c in value.split(",")]
            continue
        if not stripped:
            continue
        if not {"x", "y", "z"} <= set(columns):
            raise InputError(path, "its '# columns' line has no x, y and z columns")
        xyz_columns = tuple(columns.index(c) for c in "xyz")
        fields = next(csv.reader([line]))
        try:
            xyz = tuple(float(fields[c]) for c in xyz_columns)
        except (IndexError, ValueError):
            raise InputError(
                path, f"line {index + 1} has no x, y, z numbers where '# columns' says: {line!r}"
            ) from None
        if not np.isfinite(xyz).all():
            raise InputError(path, f"line {index + 1} has NaN or Inf coordinates")
        rows.append((index, xyz, fields, xyz_columns))
    if not rows:
        raise InputError(path, "holds no control points")
    if frame is None:
        log.warning(
            "%s: no '# CoordinateSystem' line; taken as RAS (what Slicer < 4.11 wrote)", path
        )
        frame = "RAS"
    return frame, rows


def _parse_json(path: Path, text: str) -> dict:
    try:
        document = json.loads(text)
    except ValueError as err:
        raise InputError(path, f"is not valid JSON: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("markups"), list):
        raise InputError(path, "is not a Slicer markups file (no 'markups' list)")
    return document


def _json_points(path: Path, document: dict) -> list[tuple[str, Any, Any]]:
    """[(frame, position, the control point's dict)] of every markup, in order."""
    out: list[tuple[str, Any, Any]] = []
    for m, markup in enumerate(document["markups"]):
        if not isinstance(markup, dict):
            raise InputError(path, f"markups[{m}] is not an object")
        frame = str(markup.get("coordinateSystem", "LPS")).upper()
        if frame not in ("LPS", "RAS"):
            raise InputError(path, f"markups[{m}]: unknown coordinateSystem {frame!r}")
        units = str(markup.get("coordinateUnits", "mm"))
        if units != "mm":
            raise InputError(path, f"markups[{m}]: coordinateUnits {units!r}; otreg reads mm")
        for p, point in enumerate(markup.get("controlPoints") or []):
            position = point.get("position") if isinstance(point, dict) else None
            status = point.get("positionStatus", "defined") if isinstance(point, dict) else None
            if status != "defined" or not _is_xyz(position):
                raise InputError(
                    path,
                    f"markups[{m}].controlPoints[{p}] has no defined position "
                    f"(positionStatus {status!r}): landmarks must all be placed",
                )
            out.append((frame, position, point))
    if not out:
        raise InputError(path, "holds no control points")
    return out


def _is_xyz(position) -> bool:
    if not isinstance(position, list) or len(position) != 3:
        return False
    try:
        return bool(np.isfinite(np.asarray(position, dtype=np.float64)).all())
    except (TypeError, ValueError):
        return False
