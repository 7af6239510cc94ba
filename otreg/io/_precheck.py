"""Cheap structural checks of input files, run before a reader (VTK, numpy, nibabel) sees them.

Why: VTK's PLY reader crashes the whole process (segmentation fault) on a truncated binary PLY,
even one cut inside its header, on a negative element count (abort) or list length (segfault);
its binary STL reader silently drops the triangles a truncated file lacks; its legacy ASCII
reader can return garbage coordinates for a file cut inside POINTS and takes cells with negative
sizes or unknown types; its XML readers abort (std::bad_alloc) on a huge declared point count.
A crash cannot be caught, so the declared sizes, counts and indices are checked here first and
a bad file becomes an :class:`InputError` like any other unreadable input.

:func:`check_regular_file` comes before any of that: a named pipe blocks a reader forever, a
link to ``/dev/zero`` feeds it until memory runs out.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..limits import check_memory

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
_PLY_KEYWORDS = ("ply", "format", "comment", "obj_info")
# what one point or cell of a mesh costs once read: VTK's arrays, their float64 copies, the
# weights and features (an estimate for the memory budget, on the generous side)
_BYTES_PER_ITEM = 96


_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_regular_file(path: Path) -> os.stat_result:
    """InputError unless ``path`` is (a link to) a regular file; checked with ``os.stat``,
    which neither opens nor blocks. Returns the stat result."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(path, "is a broken symbolic link") from None
        raise InputError(path, "no such file") from None
    except OSError as err:
        raise InputError(path, f"cannot be read: {err.strerror or err}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(path, "is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "not a file")
        raise InputError(path, f"is {kind}, not a regular file: otreg reads files only")
    return info


def check_file(path: Path) -> None:
    """Raise InputError if ``path`` (by suffix) is visibly malformed or truncated."""
    suffix = path.suffix.lower()
    if suffix == ".ply":
        check_ply(path)
    elif suffix == ".stl":
        check_stl(path)
    elif suffix == ".vtk":
        check_legacy_version(path)
        check_legacy_ascii_points(path)
        check_legacy_ascii_cells(path)
    elif suffix in (".vtp", ".vtu"):
        check_xml_counts(path)


_VERSION_LINE = re.compile(rb"# vtk DataFile Version (\d+)\.(\d+)\s*\n")


def check_legacy_version(path: Path) -> None:
    """A legacy .vtk starts with '# vtk DataFile Version X.Y': VTK picks the cell layout by
    that version and can crash reading a file with a garbled one."""
    with open(path, "rb") as f:
        first = f.read(64)
    if not _VERSION_LINE.match(first):
        line = first.split(b"\n")[0].decode(errors="replace")
        raise InputError(
            path,
            f"cannot be read as legacy VTK: its first line is {line!r}, not "
            "'# vtk DataFile Version X.Y'",
        )


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
    if len(lines) >= 3 and lines[2].strip().upper() == b"BINARY":
        _check_legacy_binary_points(path)
        return
    if len(lines) < 3 or lines[2].strip().upper() != b"ASCII":
        return
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


_CELL_SECTION = re.compile(
    rb"\n[ \t]*(VERTICES|LINES|POLYGONS|TRIANGLE_STRIPS|CELLS)[ \t]+(\S+)[ \t]+(\S+)[^\n]*\n"
)
_CELL_TYPES = re.compile(rb"\n[ \t]*CELL_TYPES[ \t]+(\S+)[^\n]*\n")
_ARRAY_LINE = re.compile(rb"\n[ \t]*(OFFSETS|CONNECTIVITY)[ \t]+[^\n]*\n")
#: VTK cell type ids run from 0 (empty cell) to the higher-order cells in the 70s-80s
_MAX_CELL_TYPE = 100


def _ints(path: Path, text: bytes, what: str) -> np.ndarray:
    try:
        return np.array(text.split(), dtype=np.int64)
    except (ValueError, OverflowError):
        raise InputError(
            path, f"has non-integer values in its {what} section: corrupt file"
        ) from None


def check_legacy_ascii_cells(path: Path) -> None:
    """In an ASCII legacy .vtk, cell sections must hold cells of >= 0 points that name existing
    points, and CELL_TYPES known VTK types (VTK's reader takes the rest, or crashes later)."""
    with open(path, "rb") as f:
        head = f.read(256)
    lines = head.split(b"\n")
    if len(lines) < 3 or lines[2].strip().upper() != b"ASCII":
        return
    data = path.read_bytes()
    points = _POINTS_LINE.search(data)
    n_points = int(points.group(1)) if points else 0
    check_memory(n_points * _BYTES_PER_ITEM, f"reading its {n_points} points", source=path)
    for match in _CELL_SECTION.finditer(data):
        keyword = match.group(1).decode()
        try:
            n, size = int(match.group(2)), int(match.group(3))
        except ValueError:
            n = size = -1
        if n < 0 or size < 0:
            raise InputError(path, f"has a malformed {keyword} line: {match.group(0).strip()!r}")
        check_memory(size * 16, f"reading its {keyword} ({n} cells)", source=path)
        # from the header's own newline: a keyword line may follow it at once
        following = _KEYWORD_LINE.search(data, match.end() - 1)
        section = data[match.end() : following.start() if following else len(data)]
        if not section.split() and following and _ARRAY_LINE.match(data, following.start()):
            _check_offsets_connectivity(path, data, following.start(), keyword, n_points)
            continue
        values = _ints(path, section, keyword)[:size]
        _check_legacy_cells(path, values, n, keyword, n_points)
    types = _CELL_TYPES.search(data)
    if types:
        following = _KEYWORD_LINE.search(data, types.end())
        values = _ints(
            path, data[types.end() : following.start() if following else None], "CELL_TYPES"
        )
        bad = (values < 0) | (values > _MAX_CELL_TYPE)
        if bad.any():
            raise InputError(
                path, f"has an unknown VTK cell type {int(values[bad][0])}: corrupt file"
            )


def _check_legacy_cells(
    path: Path, values: np.ndarray, n: int, keyword: str, n_points: int
) -> None:
    """Old layout: n cells as ``k id_1 .. id_k``."""

    def bad_cell(cell: int) -> InputError:
        return InputError(
            path,
            f"{keyword} cell {cell} is malformed or refers to a point beyond its {n_points} "
            "points: corrupt file",
        )

    if n and len(values) and len(values) == n * (values[0] + 1) and values[0] >= 0:
        k = int(values[0])  # every cell of the same size (triangles): no loop
        table = values.reshape(n, k + 1)
        bad = (table[:, 0] != k) | ((table[:, 1:] < 0) | (table[:, 1:] >= n_points)).any(axis=1)
        if bad.any():
            raise bad_cell(int(np.flatnonzero(bad)[0]))
        return
    position = 0
    for cell in range(n):
        if position >= len(values):
            raise InputError(path, f"is truncated inside its {keyword} section (cell {cell})")
        k = int(values[position])
        ids = values[position + 1 : position + 1 + k]
        if k < 0 or len(ids) != k or (ids < 0).any() or (ids >= n_points).any():
            raise bad_cell(cell)
        position += 1 + k


def _check_offsets_connectivity(
    path: Path, data: bytes, start: int, keyword: str, n_points: int
) -> None:
    """VTK >= 9 layout: OFFSETS (non-decreasing from 0) and CONNECTIVITY (point ids)."""
    arrays = {}
    for _ in range(2):
        match = _ARRAY_LINE.match(data, start)
        if not match:
            break
        following = _KEYWORD_LINE.search(data, match.end())
        end = following.start() if following else len(data)
        arrays[match.group(1).decode()] = _ints(path, data[match.end() : end], keyword)
        start = end
    offsets = arrays.get("OFFSETS", np.zeros(1, np.int64))
    connectivity = arrays.get("CONNECTIVITY", np.zeros(0, np.int64))
    if (
        not len(offsets)
        or offsets[0] != 0
        or (np.diff(offsets) < 0).any()
        or offsets[-1] != len(connectivity)
    ):
        raise InputError(path, f"has inconsistent {keyword} OFFSETS: corrupt file")
    if len(connectivity) and (connectivity.min() < 0 or connectivity.max() >= n_points):
        raise InputError(
            path, f"{keyword} refers to a point beyond its {n_points} points: corrupt file"
        )


_XML_COUNT = re.compile(rb'NumberOf(Points|Cells|Verts|Lines|Strips|Polys)="([^"]*)"')


def check_xml_counts(path: Path) -> None:
    """The counts a .vtp/.vtu declares: integers >= 0, within the memory budget."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    total = 0
    for what, text in _XML_COUNT.findall(head):
        try:
            count = int(text)
        except ValueError:
            count = -1
        if count < 0:
            raise InputError(
                path,
                f"declares NumberOf{what.decode()}={text.decode(errors='replace')!r}: corrupt file",
            )
        total += count
    check_memory(
        total * _BYTES_PER_ITEM, f"reading the {total} points and cells it declares", source=path
    )


_BINARY_POINTS_LINE = re.compile(rb"\nPOINTS[ \t]+(\S+)[ \t]+(\w+)[^\n]*\n")
_LEGACY_TYPES = {"float": 4, "double": 8, "int": 4, "short": 2, "char": 1, "long": 8}


def _check_legacy_binary_points(path: Path) -> None:
    """A binary legacy .vtk must hold the bytes of the points it declares (VTK allocates them
    all before reading: a lying header asks for any amount of memory)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4096)
    match = _BINARY_POINTS_LINE.search(head)
    if not match:
        return
    try:
        n = int(match.group(1))
    except ValueError:
        n = -1
    if n < 0:
        raise InputError(path, f"has a malformed POINTS line: {match.group(0).strip()!r}")
    itemsize = _LEGACY_TYPES.get(match.group(2).decode(errors="replace").lower(), 4)
    needed = match.end() + 3 * n * itemsize
    if size < needed:
        raise InputError(
            path,
            f"is truncated: it declares {n} binary points ({needed} bytes), the file has {size}",
        )
    check_memory(n * _BYTES_PER_ITEM, f"reading its {n} points", source=path)


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
                count = int(words[2])
                if count < 0:
                    raise ValueError("negative count")
                elements.append((words[1], count, []))
            elif words[0] == "property":
                if not elements:
                    raise ValueError("a property before any element")
                if words[1] == "list":
                    elements[-1][2].append(
                        ("list", _PLY_TYPES[words[2]], _PLY_TYPES[words[3]], words[4])
                    )
                else:
                    elements[-1][2].append(("scalar", _PLY_TYPES[words[1]], words[2]))
            elif words[0] not in _PLY_KEYWORDS:
                raise ValueError("not a PLY header keyword")  # VTK's parser crashes on some
        except (IndexError, KeyError, ValueError):
            raise InputError(path, f"has a malformed PLY header line: {raw.strip()!r}") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise InputError(path, f"has an unknown PLY format {fmt!r}")
    for name, _, props in elements:
        if name == "face" and not any(p[0] == "list" and p[3] in _INDEX_LISTS for p in props):
            # VTK's reader frees an invalid pointer (abort) on a face element without them
            raise InputError(
                path, "has a PLY 'face' element without a 'vertex_indices' list property"
            )
    return fmt, newline + 1, elements


_INDEX_LISTS = ("vertex_indices", "vertex_index")


def _vertex_count(elements: list[tuple[str, int, list]]) -> int:
    return next((count for name, count, _ in elements if name == "vertex"), 0)


def _index_error(path: Path, name: str, record: int, index: int, n_points: int) -> InputError:
    return InputError(
        path,
        f"PLY {name} {record} refers to vertex {index}, but the file has {n_points} vertices "
        "(indices 0 to n - 1): corrupt file",
    )


def check_ply(path: Path) -> None:
    """The body of a PLY file must be as long as its header declares, with list lengths >= 0
    and face indices that name existing vertices."""
    data = path.read_bytes()
    fmt, start, elements = _parse_ply_header(path, data[:_MAX_PLY_HEADER])
    n_points = _vertex_count(elements)
    body = memoryview(data)[start:]
    if fmt == "ascii":
        _check_ascii_ply(path, bytes(body), elements, n_points)
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        offset = 0
        for name, count, props in elements:
            offset = _binary_element_end(path, body, offset, order, name, count, props, n_points)
    check_memory(
        sum(count * _BYTES_PER_ITEM for _, count, _ in elements),
        f"reading its PLY elements ({', '.join(f'{c} {n}' for n, c, _ in elements)})",
        source=path,
    )


def _check_ascii_ply(path: Path, body: bytes, elements: list, n_points: int) -> None:
    lines = [line for line in body.splitlines() if line.strip()]
    needed = sum(count for _, count, _ in elements)
    if len(lines) < needed:
        raise InputError(
            path, f"is truncated: its PLY header declares {needed} rows, the file has {len(lines)}"
        )
    row = 0
    for name, count, props in elements:
        if not any(p[0] == "list" for p in props):
            row += count
            continue
        for record in range(count):
            words = lines[row].split()
            row += 1
            position = 0
            for prop in props:
                if prop[0] == "scalar":
                    position += 1
                    continue
                try:
                    k = int(words[position])
                    values = [int(w) for w in words[position + 1 : position + 1 + k]]
                except (IndexError, ValueError):
                    values, k = [], -1
                if k < 0 or len(values) != k:
                    raise InputError(
                        path, f"PLY {name} {record} is malformed: {lines[row - 1][:80]!r}"
                    )
                position += 1 + k
                if prop[3] in _INDEX_LISTS:
                    bad = [v for v in values if not 0 <= v < n_points]
                    if bad:
                        raise _index_error(path, name, record, bad[0], n_points)


def _binary_element_end(
    path: Path,
    body: memoryview,
    offset: int,
    order: str,
    name: str,
    count: int,
    props: list,
    n_points: int,
) -> int:
    """Byte offset where element ``name`` ends; InputError if the body is shorter, a list
    length is negative or a vertex index is out of range."""

    def short(needed: int) -> InputError:
        return InputError(
            path,
            f"is truncated: the PLY element {name!r} ({count} records) needs at least {needed} bytes "
            f"after the header, the file has {len(body)}",
        )

    def negative(record: int, k: int) -> InputError:
        return InputError(path, f"PLY {name} {record} has a list of length {k}: corrupt file")

    def check_indices(indices: np.ndarray, first_record: int) -> None:
        if not len(indices):
            return
        bad = (indices < 0) | (indices >= n_points)
        if bad.any():
            where = np.argwhere(bad)[0]
            raise _index_error(
                path, name, first_record + int(where[0]), int(indices[tuple(where)]), n_points
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
        if k < 0:
            raise negative(0, k)
        record = fixed + count_type.itemsize + k * item_type.itemsize
        end = offset + count * record
        if end > len(body):
            raise short(end)
        counts = np.ndarray((count,), count_type, body, offset + before, (record,))
        if (counts == k).all():
            if props[i][3] in _INDEX_LISTS:
                start = offset + before + count_type.itemsize
                strides = (record, item_type.itemsize)
                check_indices(np.ndarray((count, k), item_type, body, start, strides), 0)
            return end
    # General case: walk the records.
    for number in range(count):
        for prop in props:
            if prop[0] == "scalar":
                offset += np.dtype(prop[1]).itemsize
            else:
                count_type, item_type = np.dtype(order + prop[1]), np.dtype(order + prop[2])
                if offset + count_type.itemsize > len(body):
                    raise short(offset)
                k = int(np.frombuffer(body, count_type, 1, offset)[0])
                if k < 0:
                    raise negative(number, k)
                offset += count_type.itemsize
                if offset + k * item_type.itemsize > len(body):
                    raise short(offset + k * item_type.itemsize)
                if prop[3] in _INDEX_LISTS:
                    check_indices(np.frombuffer(body, item_type, k, offset)[None], number)
                offset += k * item_type.itemsize
        if offset > len(body):
            raise short(offset)
    return offset
