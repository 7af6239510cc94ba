"""Meshes and point clouds stored as VTK (.vtk legacy, .vtp, .vtu), STL, PLY or OBJ files.

Reading gives a :class:`~otreg.pointcloud.PointCloud` in world RAS+ mm. Frames: 3D Slicer (>= 4.11)
writes model files in LPS+ and says so: ``SPACE=LPS`` in line 2 of a legacy .vtk header, in the
80-byte STL header, in a PLY or OBJ comment, or as a field-data string array ``SPACE`` in
.vtp/.vtu. Files without such a tag are read in ``default_space`` (``input.mesh_frame``,
LPS unless set: what Slicer >= 4.11 and ITK-based tools assume), with a warning that says so.
Writing a warped copy stores the points back in the frame the input was read in, and tags it.

VTK and pyvista are imported inside the functions so that ``import otreg.io`` stays light.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import InputError, OutputError
from ..pointcloud import PointCloud
from .atomic import atomic_path
from .frames import from_ras, to_ras

if TYPE_CHECKING:  # pragma: no cover
    import pyvista as pv

log = logging.getLogger(__name__)

#: Suffixes read by :func:`read_mesh` (lower case).
MESH_SUFFIXES = (".vtk", ".vtp", ".vtu", ".stl", ".ply", ".obj")
#: Formats that store per-point arrays (displacement, confidence ...).
ARRAY_SUFFIXES = (".vtk", ".vtp", ".vtu")
#: Formats :func:`write_warped_mesh` can write (OBJ has no place for the frame tag).
MESH_WRITE_SUFFIXES = (".vtk", ".vtp", ".vtu", ".stl", ".ply")

_SPACE_TAG = re.compile(rb"SPACE\s*=\s*(RAS|LPS)", re.IGNORECASE)
_HEAD_BYTES = 256

# VTK cell type ids of 2D cells (vtkCellType.h): they make a dataset a surface.
_TRIANGLE, _TRIANGLE_STRIP, _POLYGON, _PIXEL, _QUAD = 5, 6, 7, 8, 9
_POLY_TYPES = (_TRIANGLE, _POLYGON, _PIXEL, _QUAD)


# ----------------------------------------------------------------------------- frames
def detect_space(path: str | Path) -> str | None:
    """The frame a mesh file declares in its header, "RAS" or "LPS", or None if it says nothing.

    Looks at the first 256 bytes: line 2 of a legacy .vtk (its free-text header), the STL
    header, PLY or OBJ comments. (.vtp/.vtu carry the tag as field data: see :func:`read_mesh`.)
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    if path.suffix.lower() == ".vtk":
        lines = head.split(b"\n")
        head = lines[1] if len(lines) > 1 else b""
    elif path.suffix.lower() not in (".stl", ".ply", ".obj"):
        return None
    match = _SPACE_TAG.search(head)
    return match.group(1).decode().upper() if match else None


def _field_space(mesh: pv.DataSet) -> str | None:
    """The ``SPACE`` field-data string Slicer writes into .vtp/.vtu files, if any."""
    if "SPACE" not in mesh.field_data:
        return None
    try:
        value = str(np.asarray(mesh.field_data["SPACE"]).ravel()[0]).upper()
    except (IndexError, TypeError, ValueError):
        return None
    return value if value in ("RAS", "LPS") else None


# ----------------------------------------------------------------------------- reading
def read_dataset(
    path: str | Path, *, default_space: str = "LPS", warn: bool = False
) -> tuple[pv.DataSet, str, bool]:
    """Read a mesh file with VTK; return ``(dataset, space, declared)``.

    ``dataset`` is a pyvista PolyData or UnstructuredGrid with coordinates exactly as stored
    (in ``space``: "RAS" or "LPS"); ``declared`` says whether the file named its frame (if not,
    ``default_space`` is assumed, with a warning when ``warn``). Every failure is an
    :class:`InputError` naming the file: unreadable or
    corrupt content (VTK errors, truncated binary data), no points, an unsupported dataset type.
    """
    import pyvista as pv

    from . import _precheck, _vtk

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _vtk.READERS:
        raise InputError(path, f"not a mesh file (mesh suffixes: {', '.join(MESH_SUFFIXES)})")
    kind = _vtk.FORMAT_NAMES[suffix]
    _precheck.check_file(path)  # VTK crashes on some truncated files: catch those first
    reader = _vtk.vtk_class(*_vtk.READERS[suffix])()
    reader.SetFileName(str(path))
    if suffix == ".vtk":
        # The legacy reader keeps only the first array of each attribute kind unless told.
        for what in (
            "Scalars",
            "Vectors",
            "Normals",
            "Tensors",
            "ColorScalars",
            "TCoords",
            "Fields",
        ):
            getattr(reader, f"ReadAll{what}On")()
    try:
        with _vtk.capture() as messages:
            reader.Update()
            output = reader.GetOutput()
    except Exception as err:  # VTK wrappers rarely raise, but a reader may
        raise InputError(path, f"cannot be read as {kind}: {err}") from None
    if messages.failed:
        raise InputError(path, f"cannot be read as {kind}: {messages.first()}")
    if output is None or output.GetNumberOfPoints() == 0:
        raise InputError(path, f"is empty or unreadable as {kind} (0 points)")
    mesh = pv.wrap(output)
    if not isinstance(mesh, (pv.PolyData, pv.UnstructuredGrid)):
        raise InputError(
            path,
            f"holds a {type(mesh).__name__}; otreg reads meshes and point clouds "
            "(PolyData, UnstructuredGrid). Convert images to NIfTI.",
        )
    _check_cell_ids(path, mesh)
    declared_space = detect_space(path) or _field_space(mesh)
    if declared_space is None:
        from .frames import check_space

        default_space = check_space(default_space)
        if warn:
            note_assumed_space(path, default_space)
    return mesh, declared_space or default_space, declared_space is not None


def note_assumed_space(path: str | Path, space: str) -> None:
    """The note (logged, shown with -v) that a mesh without a SPACE= tag was read in ``space``
    ("LPS"/"RAS"); the warped copies otreg writes carry the tag. A warning on every untagged
    file would stand beside the one message a bad input gets."""
    other = "RAS" if space == "LPS" else "LPS"
    log.info(
        "%s: no SPACE= tag; read as %s (set input.mesh_frame = '%s' if its coordinates are %s)",
        path,
        space,
        other.lower(),
        other,
    )


def _check_cell_ids(path: Path, mesh: pv.DataSet) -> None:
    """InputError if a cell refers to a point that does not exist (readers of truncated or
    corrupt files can return such cells without reporting an error)."""
    import pyvista as pv

    if isinstance(mesh, pv.PolyData):
        cell_arrays = [mesh.GetVerts(), mesh.GetLines(), mesh.GetPolys(), mesh.GetStrips()]
    else:
        cell_arrays = [mesh.GetCells()]
    for cells in cell_arrays:
        if cells is None or cells.GetNumberOfCells() == 0:
            continue
        _, connectivity = _cell_arrays(cells)
        if len(connectivity) and (connectivity.min() < 0 or connectivity.max() >= mesh.n_points):
            raise InputError(
                path,
                f"has cells that refer to points beyond its {mesh.n_points} points "
                "(corrupt or truncated file)",
            )


def _vector_names(mesh: pv.DataSet) -> list[str]:
    """Point arrays that are directions (active vectors, normals): they change with the frame."""
    names = []
    for name in (mesh.point_data.active_vectors_name, mesh.point_data.active_normals_name):
        if name and name not in names:
            names.append(name)
    return names


def point_features(mesh: pv.DataSet, space: str) -> dict[str, np.ndarray]:
    """Every numeric point array as float64 (N,) or (N, k); vectors/normals converted to RAS."""
    vectors = set(_vector_names(mesh))
    features: dict[str, np.ndarray] = {}
    for name in mesh.point_data:
        values = np.asarray(mesh.point_data[name])
        if values.dtype.kind not in "biuf":
            log.debug("skipping non-numeric point array %r (%s)", name, values.dtype)
            continue
        values = values.astype(np.float64)
        if name in vectors and values.shape[1:] == (3,):
            values = to_ras(values, space)
        features[name] = values
    return features


def _cell_arrays(cells) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (M+1,), connectivity) of a vtkCellArray as int64 numpy arrays."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    offsets = vtk_to_numpy(cells.GetOffsetsArray()).astype(np.int64)
    connectivity = vtk_to_numpy(cells.GetConnectivityArray()).astype(np.int64)
    return offsets, connectivity


def _legacy_cells(offsets: np.ndarray, connectivity: np.ndarray, select: np.ndarray) -> np.ndarray:
    """Cells ``select`` (indices) as a legacy VTK cell array ``[k, id0 .. id_k-1, k, ...]``."""
    starts = offsets[:-1][select]
    counts = offsets[1:][select] - starts
    out = np.empty(int(counts.sum() + len(counts)), dtype=np.int64)
    heads = np.concatenate([[0], np.cumsum(counts + 1)[:-1]]).astype(np.int64)
    out[heads] = counts
    is_id = np.ones(len(out), dtype=bool)
    is_id[heads] = False
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    out[is_id] = connectivity[np.repeat(starts, counts) + within]
    return out


def has_surface_cells(mesh: pv.DataSet) -> bool:
    """Whether ``mesh`` has 2D cells (polygons, triangles, quads, pixels, strips)."""
    import pyvista as pv

    if isinstance(mesh, pv.PolyData):
        return mesh.GetNumberOfPolys() > 0 or mesh.GetNumberOfStrips() > 0
    return bool(np.isin(np.asarray(mesh.celltypes), (*_POLY_TYPES, _TRIANGLE_STRIP)).any())


def _surface_polydata(mesh: pv.DataSet):
    """A vtkPolyData of ``mesh``'s points and 2D cells only (same point ids), or None."""
    import pyvista as pv
    from vtkmodules.util.numpy_support import numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData

    if not has_surface_cells(mesh):
        return None
    surface = vtkPolyData()
    surface.SetPoints(mesh.GetPoints())
    if isinstance(mesh, pv.PolyData):
        surface.SetPolys(mesh.GetPolys())
        surface.SetStrips(mesh.GetStrips())
        return surface
    types = np.asarray(mesh.celltypes)
    offsets, connectivity = _cell_arrays(mesh.GetCells())
    for setter, wanted in (
        (surface.SetPolys, _POLY_TYPES),
        (surface.SetStrips, (_TRIANGLE_STRIP,)),
    ):
        select = np.flatnonzero(np.isin(types, wanted))
        if not len(select):
            continue
        legacy = _legacy_cells(offsets, connectivity, select)
        pixels = np.flatnonzero(types[select] == _PIXEL)
        if len(pixels):
            # A pixel lists its corners in raster order (0, 1, 3, 2 around the square).
            heads = np.concatenate([[0], np.cumsum(np.diff(offsets)[select] + 1)[:-1]])[pixels]
            legacy[heads + 3], legacy[heads + 4] = (
                legacy[heads + 4].copy(),
                legacy[heads + 3].copy(),
            )
        cells = vtkCellArray()
        cells.ImportLegacyFormat(numpy_to_vtkIdTypeArray(legacy, deep=True))
        setter(cells)
    return surface


def surface_triangles(mesh: pv.DataSet) -> np.ndarray | None:
    """(M, 3) int64 point ids of the triangles of ``mesh``'s 2D cells, or None if it has none.

    Polygons, quads, pixels and strips are triangulated by vtkTriangleFilter (which handles
    non-convex polygons); lines and vertices are ignored.
    """
    from vtkmodules.vtkFiltersCore import vtkTriangleFilter

    surface = _surface_polydata(mesh)
    if surface is None:
        return None
    triangulate = vtkTriangleFilter()
    triangulate.SetInputData(surface)
    triangulate.PassVertsOff()
    triangulate.PassLinesOff()
    triangulate.Update()
    out = triangulate.GetOutput()
    offsets, connectivity = _cell_arrays(out.GetPolys())
    if len(offsets) <= 1:
        return np.empty((0, 3), dtype=np.int64)
    # The filter passes the input points through unchanged, so ids index mesh.points.
    if out.GetNumberOfPoints() != mesh.n_points or not (np.diff(offsets) == 3).all():
        raise RuntimeError(
            "vtkTriangleFilter changed the points or left non-triangles"
        )  # pragma: no cover
    return connectivity.reshape(-1, 3)


def triangle_area_weights(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(N,) lumped vertex areas, mm^2: each vertex gets 1/3 of the area of each of its triangles.

    Args:
        points: (N, 3) mm (any frame: areas do not depend on it).
        triangles: (M, 3) int point ids.
    """
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    a, b, c = p[t[:, 0]], p[t[:, 1]], p[t[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    return np.bincount(t.ravel(), weights=np.repeat(area / 3.0, 3), minlength=len(p))


def mesh_weights(
    mesh: pv.DataSet, surface_weights: Literal["area", "uniform"] = "area"
) -> tuple[np.ndarray, str]:
    """(N,) weights of ``mesh``'s points and how they were made ("area" or "uniform").

    Surfaces (any 2D cell) with ``surface_weights="area"`` get lumped triangle areas (mm^2);
    vertices in no triangle get 0. Point clouds, line sets, and surfaces whose area is zero
    everywhere get 1 per point.
    """
    n = mesh.n_points
    if surface_weights not in ("area", "uniform"):
        raise ValueError(f"surface_weights must be 'area' or 'uniform', got {surface_weights!r}")
    if surface_weights == "area":
        triangles = surface_triangles(mesh)
        if triangles is not None:
            weights = triangle_area_weights(np.asarray(mesh.points), triangles)
            if weights.sum() > 0:
                return weights, "area"
            log.warning("all %d triangles have zero area: using uniform weights", len(triangles))
    return np.ones(n), "uniform"


def read_mesh(
    path: str | Path,
    *,
    surface_weights: Literal["area", "uniform"] = "area",
    default_space: str = "LPS",
) -> PointCloud:
    """Read a mesh or point cloud file as a weighted :class:`PointCloud` (world RAS+ mm).

    Args:
        path: .vtk (legacy PolyData or UnstructuredGrid), .vtp, .vtu, .stl, .ply or .obj.
        surface_weights: "area" (vertices of 2D cells weighted by their share of triangle
            area, mm^2) or "uniform" (1 per point). Files without 2D cells always get 1 per point.
        default_space: frame of a file without a SPACE= tag ("LPS" or "RAS").

    Returns:
        Points (N, 3) in RAS (converted from LPS when the file declares ``SPACE=LPS``), weights
        (N,), every numeric point array as a feature, meta: reader, space (the file's frame),
        space_declared, dataset type, number of cells, surface (whether it has 2D cells),
        weighting.
    """
    mesh, space, declared = read_dataset(path, default_space=default_space)
    weights, how = mesh_weights(mesh, surface_weights)
    return PointCloud(
        points=to_ras(np.asarray(mesh.points), space),
        weights=weights,
        features=point_features(mesh, space),
        source=str(path),
        meta={
            "reader": "vtk",
            "space": space,
            "space_declared": declared,
            "dataset": type(mesh).__name__,
            "n_cells": int(mesh.n_cells),
            "surface": has_surface_cells(mesh),
            "weights": how,
        },
    )


def read_mesh_points(path: str | Path, *, default_space: str = "LPS") -> np.ndarray:
    """(N, 3) float64 RAS mm points of a mesh file, in file order (no weights, no checks);
    ``default_space``: the frame of a file without a SPACE= tag."""
    mesh, space, _ = read_dataset(path, default_space=default_space, warn=True)
    return to_ras(np.asarray(mesh.points), space)


# ----------------------------------------------------------------------------- writing
def warped_suffix(input_path: str | Path) -> str:
    """Suffix for a warped copy of ``input_path``: same for .vtk/.vtp/.vtu, else ".vtp".

    STL, PLY and OBJ cannot store the per-point arrays (displacement, confidence) that a warped
    copy carries, so those inputs are written as .vtp.
    """
    suffix = Path(input_path).suffix.lower()
    return suffix if suffix in ARRAY_SUFFIXES else ".vtp"


def _as_vector(name: str, values: np.ndarray, vectors: Iterable[str] | None) -> bool:
    if vectors is not None:
        return name in set(vectors)
    return values.ndim == 2 and values.shape[1] == 3


def _add_arrays(
    mesh: pv.DataSet,
    arrays: Mapping[str, Any] | None,
    space: str,
    vectors: Iterable[str] | None,
) -> None:
    """Attach per-point ``arrays`` to ``mesh``; RAS vectors are converted to ``space``."""
    vectors = None if vectors is None else list(vectors)
    for name, values in (arrays or {}).items():
        values = np.asarray(values)
        if len(values) != mesh.n_points:
            raise ValueError(f"array {name!r} has {len(values)} rows for {mesh.n_points} points")
        if _as_vector(name, values, vectors):
            values = from_ras(values, space)
        mesh.point_data[name] = values
    if arrays and "displacement" in arrays:
        # Written as VECTORS in legacy files: viewers offer it for glyphs and warping.
        mesh.point_data.active_vectors_name = "displacement"


def _drop_normals(mesh: pv.DataSet) -> None:
    """Remove normals copied from the input: they do not describe the warped surface."""
    for data in (mesh.point_data, mesh.cell_data):
        name = data.active_normals_name
        if name:
            log.debug("dropping stale normals array %r from the warped copy", name)
            data.remove(name)


def write_dataset(mesh: pv.DataSet, path: str | Path, *, space_tag: str | None = None) -> Path:
    """Write ``mesh`` (coordinates already in the frame ``space_tag`` names) atomically.

    The format comes from ``path``'s suffix: .vtk (legacy, binary, file version 4.2 that every
    VTK and Slicer reads), .vtp, .vtu, .stl, .ply. ``space_tag`` ("RAS"/"LPS"/None) is written
    where 3D Slicer looks for it: legacy header line 2 ("vtk output SPACE=LPS"), field data
    ``SPACE`` (.vtp/.vtu), STL header, PLY comment.

    Raises:
        OutputError: unsupported suffix, a dataset the format cannot hold, or a VTK failure.
    """
    import pyvista as pv

    from . import _vtk

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_WRITE_SUFFIXES:
        raise OutputError(
            f"{path}: cannot write a mesh as {suffix or 'a file without suffix'} "
            f"(mesh outputs: {', '.join(MESH_WRITE_SUFFIXES)})"
        )
    is_poly = isinstance(mesh, pv.PolyData)
    if suffix in (".vtp", ".stl", ".ply") and not is_poly:
        raise OutputError(
            f"{path}: an UnstructuredGrid cannot be written as {suffix}; use .vtu or .vtk"
        )
    data = mesh
    if suffix in (".vtp", ".vtu") and space_tag:
        data = mesh.copy(deep=False)
        data.field_data["SPACE"] = np.array([space_tag])
    if suffix == ".vtu" and is_poly:
        data = data.cast_to_unstructured_grid()
    if suffix in (".stl", ".ply") and len(mesh.point_data.keys()):
        log.warning("%s: %s files cannot store point arrays; they are left out", path, suffix)

    if suffix == ".vtk":
        writer = _vtk.vtk_class(
            "vtkmodules.vtkIOLegacy",
            "vtkPolyDataWriter" if is_poly else "vtkUnstructuredGridWriter",
        )()
        writer.SetFileVersion(42)
        writer.SetFileTypeToBinary()
        writer.SetHeader("vtk output" + (f" SPACE={space_tag}" if space_tag else ""))
    elif suffix in (".vtp", ".vtu"):
        writer = _vtk.vtk_class(
            "vtkmodules.vtkIOXML",
            "vtkXMLPolyDataWriter" if suffix == ".vtp" else "vtkXMLUnstructuredGridWriter",
        )()
        writer.SetDataModeToAppended()
    elif suffix == ".stl":
        data = data.triangulate()
        writer = _vtk.vtk_class("vtkmodules.vtkIOGeometry", "vtkSTLWriter")()
        writer.SetFileTypeToBinary()
        writer.SetHeader("otreg output" + (f" SPACE={space_tag}" if space_tag else ""))
    else:  # .ply
        writer = _vtk.vtk_class("vtkmodules.vtkIOPLY", "vtkPLYWriter")()
        writer.SetFileTypeToBinary()
        if space_tag:
            writer.AddComment(f"SPACE={space_tag}")
    writer.SetInputData(data)

    with atomic_path(path) as tmp:
        writer.SetFileName(str(tmp))
        with _vtk.capture() as messages:
            ok = writer.Write()
        if ok != 1 or messages.failed:
            problem = messages.first() or "unknown error"
            raise OutputError(f"{path}: VTK could not write the file: {problem}")
    return path


def write_warped_mesh(
    path_in: str | Path,
    path_out: str | Path,
    points_ras: np.ndarray,
    arrays: Mapping[str, Any] | None = None,
    *,
    vectors: Iterable[str] | None = None,
    default_space: str = "LPS",
) -> Path:
    """Write a copy of mesh ``path_in`` with new point positions, keeping its cells and arrays.

    Args:
        path_in: the original mesh file (read again, so that its cells and arrays are kept).
        path_out: output file; format from its suffix (see :func:`write_dataset` and
            :func:`warped_suffix`).
        points_ras: (N, 3) new positions, RAS mm, same number and order as
            :func:`read_mesh` returned.
        arrays: extra per-point arrays, e.g. ``displacement`` (N, 3) mm RAS and ``confidence``
            (N,). They are added to (or replace) the input's arrays.
        vectors: names of the arrays that are RAS vectors (converted to the file's frame with
            the points). Default: every (N, 3) array.

    The output is stored in the frame the input was read in, and tagged with it: an LPS input
    gives an LPS output with ``SPACE=LPS``; a file without a tag is read and written in
    ``default_space``, now named in the output. Normals of the input are dropped (they no
    longer match the warped surface).
    """
    mesh, space, _ = read_dataset(path_in, default_space=default_space)
    points = np.asarray(points_ras, dtype=np.float64)
    if points.shape != (mesh.n_points, 3):
        raise ValueError(
            f"{path_in}: expected warped points of shape ({mesh.n_points}, 3), got {points.shape}"
        )
    mesh.points = from_ras(points, space)
    _drop_normals(mesh)
    _add_arrays(mesh, arrays, space, vectors)
    return write_dataset(mesh, path_out, space_tag=space)


def write_point_cloud(
    path_out: str | Path,
    points_ras: np.ndarray,
    arrays: Mapping[str, Any] | None = None,
    *,
    space: str = "RAS",
    vectors: Iterable[str] | None = None,
) -> Path:
    """Write (N, 3) RAS mm points as a VTK point cloud (one vertex cell per point) with arrays.

    Args:
        path_out: .vtk, .vtp or .vtu (also .ply, without the arrays).
        points_ras: (N, 3) positions, RAS mm.
        arrays: per-point arrays; RAS vectors (see ``vectors``) are converted with the points.
        space: frame to store the coordinates in; it is written as the file's ``SPACE`` tag.
        vectors: names of the vector arrays; default every (N, 3) array.
    """
    import pyvista as pv

    from .frames import check_space

    space = check_space(space)
    points = np.asarray(points_ras, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"expected points of shape (N, 3), got {points.shape}")
    if Path(path_out).suffix.lower() == ".stl":
        raise OutputError(f"{path_out}: a point cloud has no triangles to store in an STL file")
    cloud = pv.PolyData(from_ras(points, space))  # pyvista adds one vertex cell per point
    _add_arrays(cloud, arrays, space, vectors)
    return write_dataset(cloud, path_out, space_tag=space)
