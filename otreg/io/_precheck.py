"""Cheap structural checks of mesh files, run before VTK reads them.

Why: VTK's PLY reader crashes the whole process (segmentation fault) on a truncated binary PLY,
even one cut inside its header; its binary STL reader silently drops the triangles a truncated
file lacks; its legacy ASCII reader can return garbage coordinates for a file cut inside POINTS.
A crash cannot be caught, so the declared sizes are checked here first and a short file becomes
an :class:`InputError` like any other unreadable input.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import InputError

_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_MAX_PLY_HEADER = 1 << 16


def check_file(path: Path) -> None:
    """Raise InputError if ``path`` (by suffix) is visibly malformed or truncated."""
    suffix = path.suffix.lower()
    if suffix == ".ply":
        check_ply(path)
    elif suffix == ".stl":
        check_stl(path)
    elif suffix == ".vtk":
        check_legacy_ascii_points(path)


_KEYWORD_LINE = re.compile(rb"\n[ \t]*[A-Z][A-Z_]+")
_POINTS_LINE = re.compile(rb"\nPOINTS[ \t]+(\d+)[^\n]*\n")


def check_legacy_ascii_points(path: Path) -> None:
    """An ASCII legacy .vtk must hold 3 numbers per declared point.

    VTK's ASCII reader can return a file cut inside its POINTS section without any error,
    filling the missing coordinates with garbage: count them here.
    """
    with open(path, "rb") as f:
        head = f.read(256)
    lines = head.split(b"\n")
    if len(lines) < 3 or lines[2].strip().upper() != b"ASCII":
        return  # binary: VTK reports short reads itself
    data = path.read_bytes()
    match = _POINTS_LINE.search(data)
    if not match:
        return
    n = int(match.group(1))
    start = match.end()
    following = _KEYWORD_LINE.search(data, start)
    values = len(data[start : following.start() if following else len(data)].split())
    if values < 3 * n:
        raise InputError(
            path,
            f"is truncated or corrupt: it declares {n} points but holds {values} of their "
            f"{3 * n} coordinates",
        )


def check_stl(path: Path) -> None:
    """A binary STL must hold 84 + 50 * (its declared triangle count) bytes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(1024)
    if head.lstrip().lower().startswith(b"solid") and b"facet" in head.lower():
        return  # ASCII STL: VTK's reader reports its own errors
    if size < 84:
        raise InputError(
            path, f"is not an STL file: {size} bytes, shorter than the 84-byte binary header"
        )
    n = int(np.frombuffer(head[80:84], dtype="<u4")[0])
    if size < 84 + 50 * n:
        raise InputError(
            path,
            f"is truncated: a binary STL of {n} triangles needs {84 + 50 * n} bytes, "
            f"the file has {size}",
        )


def _parse_ply_header(path: Path, data: bytes) -> tuple[str, int, list[tuple[str, int, list]]]:
    """-> (format, header length in bytes, [(element, count, [(kind, type(s))...])])."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise InputError(path, "is not a valid PLY file (no 'ply' magic or no 'end_header' line)")
    newline = data.find(b"\n", end)
    if newline < 0:
        raise InputError(path, "is truncated right after its PLY header")
    fmt = None
    elements: list[tuple[str, int, list]] = []
    for raw in data[:end].decode("ascii", errors="replace").splitlines():
        words = raw.split()
        if not words:
            continue
        try:
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append((words[1], int(words[2]), []))
            elif words[0] == "property" and elements:
                if words[1] == "list":
                    elements[-1][2].append(("list", _PLY_TYPES[words[2]], _PLY_TYPES[words[3]]))
                else:
                    elements[-1][2].append(("scalar", _PLY_TYPES[words[1]]))
        except (IndexError, KeyError, ValueError):
            raise InputError(path, f"has a malformed PLY header line: {raw.strip()!r}") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise InputError(path, f"has an unknown PLY format {fmt!r}")
    return fmt, newline + 1, elements


def check_ply(path: Path) -> None:
    """The body of a PLY file must be as long as its header declares."""
    data = path.read_bytes()
    fmt, start, elements = _parse_ply_header(path, data[:_MAX_PLY_HEADER])
    body = memoryview(data)[start:]
    if fmt == "ascii":
        needed = sum(count for _, count, _ in elements)
        rows = sum(1 for line in bytes(body).splitlines() if line.strip())
        if rows < needed:
            raise InputError(
                path, f"is truncated: its PLY header declares {needed} rows, the file has {rows}"
            )
        return
    order = "<" if fmt == "binary_little_endian" else ">"
    offset = 0
    for name, count, props in elements:
        offset = _binary_element_end(path, body, offset, order, name, count, props)


def _binary_element_end(
    path: Path, body: memoryview, offset: int, order: str, name: str, count: int, props: list
) -> int:
    """Byte offset where element ``name`` ends; InputError if the body is shorter."""

    def short(needed: int) -> InputError:
        return InputError(
            path,
            f"is truncated: the PLY element {name!r} ({count} records) needs at least {needed} bytes "
            f"after the header, the file has {len(body)}",
        )

    lists = [i for i, p in enumerate(props) if p[0] == "list"]
    fixed = sum(np.dtype(p[1]).itemsize for p in props if p[0] == "scalar")
    if not lists:
        end = offset + count * fixed
        if end > len(body):
            raise short(end)
        return end
    if count == 0:
        return offset
    # Common case (faces: one list of the same length in every record): check it with a
    # strided view instead of a Python loop over millions of records.
    if len(lists) == 1:
        i = lists[0]
        count_type, item_type = np.dtype(order + props[i][1]), np.dtype(order + props[i][2])
        before = sum(np.dtype(p[1]).itemsize for p in props[:i])
        if offset + before + count_type.itemsize > len(body):
            raise short(offset)
        k = int(np.frombuffer(body, count_type, 1, offset + before)[0])
        record = fixed + count_type.itemsize + k * item_type.itemsize
        end = offset + count * record
        if end > len(body):
            raise short(end)
        counts = np.ndarray((count,), count_type, body, offset + before, (record,))
        if (counts == k).all():
            return end
    # General case: walk the records.
    for _ in range(count):
        for prop in props:
            if prop[0] == "scalar":
                offset += np.dtype(prop[1]).itemsize
            else:
                count_type = np.dtype(order + prop[1])
                if offset + count_type.itemsize > len(body):
                    raise short(offset)
                k = int(np.frombuffer(body, count_type, 1, offset)[0])
                offset += count_type.itemsize + k * np.dtype(prop[2]).itemsize
        if offset > len(body):
            raise short(offset)
    return offset
