"""Files in, files out: every format otreg reads becomes a weighted :class:`PointCloud`.

Public functions:

- :func:`load`: a mesh, point list or NIfTI volume -> PointCloud in world RAS+ mm.
- :func:`load_options`: an :class:`otreg.config.InputConfig` -> the keyword arguments of ``load``.
- :func:`warp_file`: write a moved copy of an input file (mesh cells and frame kept).
- :func:`read_landmarks`: ordered landmarks in mm ("mm" rows, Slicer markups, or DIR-LAB voxel
  indices).
- :func:`supported_suffixes`, :func:`file_suffix`, :func:`warped_suffix`.

Submodules: ``frames`` (RAS/LPS), ``atomic`` (atomic writes), ``meshes`` (VTK/STL/PLY/OBJ via
VTK + pyvista), ``pointlists`` (.txt/.csv/.npy), ``volumes`` (NIfTI via nibabel), ``landmarks``.
None of them imports VTK, pyvista, nibabel or torch at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InputError, OutputError
from ..pointcloud import PointCloud
from . import markups, meshes, pointlists, volumes
from .atomic import full_suffix
from .landmarks import read_landmarks
from .meshes import warped_suffix

__all__ = [
    "file_suffix",
    "load",
    "load_options",
    "read_landmarks",
    "supported_suffixes",
    "warp_file",
    "warped_suffix",
]

log = logging.getLogger(__name__)

#: ``mapping(points_ras (N, 3)) -> (new_points_ras (N, 3), {name: (N,) or (N, k) array})``
Mapping3D = Callable[[np.ndarray], "tuple[np.ndarray, Mapping[str, np.ndarray]]"]

_KINDS = {
    **{s: "mesh" for s in meshes.MESH_SUFFIXES},
    **{s: "points" for s in pointlists.POINT_LIST_SUFFIXES},
    **{s: "volume" for s in volumes.VOLUME_SUFFIXES},
}


def supported_suffixes() -> tuple[str, ...]:
    """File suffixes :func:`load` reads (lower case; ``.nii.gz`` counts as one)."""
    return tuple(_KINDS)


def file_suffix(path: str | Path) -> str:
    """The lower-case suffix that decides the format: ``.vtk``, ``.nii.gz`` ..."""
    return full_suffix(path).lower()


def _kind(path: Path) -> str:
    """'mesh', 'points' or 'volume' for a supported suffix; InputError otherwise."""
    suffix = file_suffix(path)
    if suffix not in _KINDS:
        shown = suffix or "no suffix"
        raise InputError(
            path, f"unsupported file type ({shown}); supported: {', '.join(supported_suffixes())}"
        )
    return _KINDS[suffix]


def _check_readable(path: Path) -> None:
    """One clear InputError for a missing file, a directory, a FIFO or device (checked without
    opening it: opening a pipe blocks), or a file we may not read."""
    from ._precheck import check_regular_file

    check_regular_file(path)
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as err:
        raise InputError(path, f"cannot be read: {err.strerror or err}") from None


def load(
    path: str | Path,
    *,
    label: Sequence[int] | None = None,
    intensity_range: tuple[float, float] | None = None,
    volume: int | None = None,
    weight_by: str | None = None,
    surface_weights: Literal["area", "uniform"] = "area",
    mesh_frame: Literal["lps", "ras"] = "lps",
) -> PointCloud:
    """Read a file as a weighted point cloud in world RAS+ mm.

    Args:
        path: a mesh or point cloud (.vtk, .vtp, .vtu, .stl, .ply, .obj), a point list
            (.txt, .csv, .npy: x y z rows in mm) or a NIfTI volume (.nii, .nii.gz).
        label: NIfTI: keep voxels with these values.
        intensity_range: NIfTI: keep voxels with ``low <= value <= high``.
        volume: NIfTI: index of the volume of a 4D image.
        weight_by: multiply the weights by this point array (e.g. ``"radius"`` of a vessel
            tree, or ``"intensity"`` of a volume); it must be (N,) and >= 0.
        surface_weights: meshes with 2D cells: "area" (vertex share of triangle area, mm^2) or
            "uniform" (1 per point).
        mesh_frame: meshes without a SPACE= tag: "lps" (as 3D Slicer reads them) or "ras".

    Options that do not apply to the file's kind (``label`` for a mesh ...) are ignored, so one
    :class:`~otreg.config.InputConfig` can serve a source and a target of different kinds.

    Returns:
        PointCloud with ``source=str(path)`` and meta["reader"], meta["space"] (the frame the
        file was stored in: "RAS" or "LPS"; the points are RAS either way).

    Raises:
        InputError: one error naming the file for a missing file, a directory, an unsupported
            suffix, unreadable or corrupt content, an empty mesh or selection, fewer than 4
            points, NaN/Inf coordinates, a bad ``weight_by`` array, negative or all-zero weights.
    """
    path = Path(path)
    _check_readable(path)
    kind = _kind(path)
    if kind == "volume":
        cloud = volumes.read_volume(
            path, label=label, intensity_range=intensity_range, volume=volume
        )
    else:
        volume_options = (
            ("label", label),
            ("intensity_range", intensity_range),
            ("volume", volume),
        )
        ignored = {k: v for k, v in volume_options if v}
        if ignored:
            log.debug("%s: options for volumes ignored: %s", path, ignored)
        if kind == "mesh":
            cloud = meshes.read_mesh(
                path, surface_weights=surface_weights, default_space=mesh_frame
            )
        else:
            cloud = pointlists.read_point_list(path)
    _check_extent(cloud)
    if weight_by:
        cloud = _weigh_by(cloud, weight_by)
    if cloud.meta.get("space_declared") is False:  # once the file is known to be good
        meshes.note_assumed_space(path, cloud.meta["space"])
    log.debug("loaded %r", cloud)
    return cloud


#: coordinates beyond this (mm: 1 km) are not a body in mm; float32 costs of such numbers overflow
MAX_COORDINATE_MM = 1e6


def _check_extent(cloud: PointCloud) -> None:
    largest = float(np.abs(cloud.points).max())
    if largest > MAX_COORDINATE_MM:
        raise InputError(
            cloud.source,
            f"has coordinates up to {largest:.3g} mm, beyond {MAX_COORDINATE_MM:g} mm (1 km): "
            "otreg reads coordinates in mm; is the file in another unit or corrupt?",
        )


def _weigh_by(cloud: PointCloud, name: str) -> PointCloud:
    """The cloud with its weights multiplied by point array ``name`` (checked: (N,), finite, >= 0)."""
    if name not in cloud.features:
        arrays = ", ".join(repr(k) for k in cloud.features) or "none"
        raise InputError(
            cloud.source, f"has no point array {name!r} to weight by (its point arrays: {arrays})"
        )
    values = np.asarray(cloud.features[name], dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise InputError(
            cloud.source,
            f"point array {name!r} has shape {values.shape}; weight_by needs one value per point",
        )
    if not np.isfinite(values).all():
        raise InputError(
            cloud.source, f"point array {name!r} has NaN or Inf values; it cannot weight points"
        )
    negative = values < 0
    if negative.any():
        raise InputError(
            cloud.source,
            f"point array {name!r} has {int(negative.sum())} negative value(s) (min {values.min():g}); "
            "weights must be >= 0",
        )
    weights = cloud.weights * values
    if not weights.sum() > 0:
        raise InputError(
            cloud.source, f"weighting by point array {name!r} leaves every point with weight 0"
        )
    meta = {**cloud.meta, "weight_by": name}
    return PointCloud(cloud.points, weights, dict(cloud.features), cloud.source, meta)


def load_options(cfg_input: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`load` from an :class:`otreg.config.InputConfig`.

    ``label=[]`` becomes None (no label selection); ``points`` is not a load option (see
    :func:`otreg.sampling.downsample`).
    """
    intensity_range = getattr(cfg_input, "intensity_range", None)
    return {
        "label": list(cfg_input.label) or None,
        "intensity_range": tuple(intensity_range) if intensity_range is not None else None,
        "volume": cfg_input.volume,
        "weight_by": cfg_input.weight_by or None,
        "surface_weights": cfg_input.surface_weights,
        "mesh_frame": getattr(cfg_input, "mesh_frame", "lps"),
    }


# ----------------------------------------------------------------------------- warping files
def mesh_frame(load_kwargs: Mapping[str, Any]) -> str:
    """The frame of untagged meshes in :func:`load` options ("LPS" unless "ras" is set)."""
    return str(load_kwargs.get("mesh_frame") or "lps").upper()


def _read_native(
    path: Path,
    landmark_format: str,
    spacing: Sequence[float] | None,
    load_kwargs: Mapping[str, Any],
) -> tuple[np.ndarray, str]:
    """(N, 3) RAS points of ``path`` in file order and its kind ('landmarks', 'mesh', ...)."""
    if landmark_format != "mm":  # DIR-LAB indices; read_landmarks names an unknown format
        return read_landmarks(path, landmark_format, spacing), "landmarks"  # type: ignore[arg-type]
    _check_readable(path)
    if markups.is_markups(path):
        return markups.read_markups(path), "markups"
    kind = _kind(path)
    if kind == "mesh":
        return meshes.read_mesh_points(path, default_space=mesh_frame(load_kwargs)), kind
    if kind == "points":
        return read_landmarks(path, "mm"), kind  # same reader, no minimum number of points
    return load(path, **load_kwargs).points, kind


def warp_file(
    path_in: str | Path,
    path_out: str | Path,
    mapping: Mapping3D,
    *,
    landmark_format: Literal["mm", "dirlab"] = "mm",
    spacing: Sequence[float] | None = None,
    load_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Move the points of ``path_in`` with ``mapping`` and write the result to ``path_out``.

    Args:
        path_in: any file :func:`load` reads, or DIR-LAB landmarks (``landmark_format="dirlab"``).
        path_out: output file, written atomically, format chosen by its suffix:

            - ``.txt``/``.csv``: one ``x y z`` row per point (mm, RAS, input order), arrays
              dropped (the only output for DIR-LAB input: its rows become mm).
            - a mesh input to ``.vtk/.vtp/.vtu/.stl/.ply``: the input's cells, arrays and frame
              (LPS stays LPS) are kept, with the new positions and the mapping's arrays.
            - a point-list or NIfTI input to ``.vtk/.vtp/.vtu``: a point cloud (one vertex per
              point) with the arrays, tagged ``SPACE=RAS``.
            - a 3D Slicer markups input (``.fcsv``, ``.mrk.json``) to the same format: a copy
              with the new positions, in the input's frame, everything else kept.
        mapping: ``mapping(points_ras (N, 3) float64) -> (new_points_ras (N, 3), arrays)``
            where ``arrays`` maps names to (N,) or (N, k) arrays; (N, 3) arrays are taken as
            RAS vectors (e.g. ``displacement``) and converted with the points. A bare array
            return value means no arrays.
        landmark_format: "mm" or "dirlab" (see :func:`read_landmarks`).
        spacing: voxel size (sx, sy, sz) mm for DIR-LAB landmarks.
        load_kwargs: :func:`load` options used to read a NIfTI input (its voxel selection).

    Returns:
        ``Path(path_out)``.
    """
    path_in, path_out = Path(path_in), Path(path_out)
    points, kind = _read_native(path_in, landmark_format, spacing, dict(load_kwargs or {}))
    result = mapping(points)
    if isinstance(result, tuple):
        new_points, arrays = result
    else:
        new_points, arrays = result, {}
    new_points = np.asarray(new_points, dtype=np.float64)
    if new_points.shape != points.shape:
        raise ValueError(
            f"mapping returned points of shape {new_points.shape} for input {points.shape}"
        )
    if not np.isfinite(new_points).all():
        from ..errors import SolverError

        bad = int((~np.isfinite(new_points).all(axis=1)).sum())
        raise SolverError(
            f"{path_in}: the transform moves {bad} of its {len(new_points)} points to NaN or Inf; "
            "nothing was written (is the file in the registration's source space?)"
        )
    arrays = dict(arrays or {})

    suffix = file_suffix(path_out)
    if suffix in pointlists.TEXT_SUFFIXES:
        if arrays:
            log.debug(
                "%s: text output keeps positions only; arrays %s dropped", path_out, list(arrays)
            )
        return pointlists.write_points_txt(path_out, new_points)
    if kind == "markups" and markups.is_markups(path_out):
        return markups.write_markups(path_in, path_out, new_points)
    if kind == "landmarks":
        raise OutputError(
            f"{path_out}: DIR-LAB landmarks are written as .txt (x y z in mm), not {suffix}"
        )
    if kind == "mesh" and suffix in meshes.MESH_WRITE_SUFFIXES:
        return meshes.write_warped_mesh(
            path_in, path_out, new_points, arrays, default_space=mesh_frame(load_kwargs or {})
        )
    if kind in ("points", "volume", "markups") and suffix in meshes.ARRAY_SUFFIXES:
        return meshes.write_point_cloud(path_out, new_points, arrays)
    allowed = meshes.MESH_WRITE_SUFFIXES if kind == "mesh" else meshes.ARRAY_SUFFIXES
    raise OutputError(
        f"{path_out}: cannot write a moved {kind} file as {suffix or 'a file without suffix'}; "
        f"use one of {', '.join((*pointlists.TEXT_SUFFIXES, *allowed))}"
    )
