"""Point lists: text tables (.txt, .csv) and NumPy arrays (.npy) of x y z rows in mm (RAS+).

Text tables may be separated by whitespace, commas, semicolons or tabs, may start with one header
line (``x,y,z``), may hold ``#`` comments and Windows line endings. Columns after the third are
ignored. Every point weighs 1.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..pointcloud import PointCloud
from .atomic import write_text_atomic

log = logging.getLogger(__name__)

#: Suffixes read by :func:`read_point_list` (lower case).
POINT_LIST_SUFFIXES = (".txt", ".csv", ".npy")
#: Suffixes :func:`write_points_txt` writes.
TEXT_SUFFIXES = (".txt", ".csv")

_SEPARATORS = re.compile(r"[\s,;]+")
# "62,5;89,7" or "62,5 89,7": a comma inside a number, another character between the columns
_DECIMAL_COMMA = re.compile(r"\d,\d")
_OTHER_SEPARATOR = re.compile(r";|\t|\d\s+[-+.\d]")


def read_table(path: str | Path, *, min_columns: int = 3) -> np.ndarray:
    """A text table of numbers -> (N, k) float64 array, k >= ``min_columns``.

    One optional header line (the first non-comment line, if it is not all numbers) is skipped.
    Every other row must have the same number of columns.

    Raises:
        InputError: unreadable file, not text, a non-numeric row, ragged rows, no rows.
    """
    from ..limits import check_memory

    path = Path(path)
    with contextlib.suppress(OSError):
        # Python's strings and lists of the rows: about ten times the text's bytes
        check_memory(path.stat().st_size * 10, "reading its text rows", source=path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig drops a BOM written by Excel
    except UnicodeDecodeError:
        raise InputError(path, "is not a text file (cannot be decoded as UTF-8)") from None
    except OSError as err:
        raise InputError(path, f"cannot be read: {err.strerror or err}") from None
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    header_seen = False
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        fields = [f for f in _SEPARATORS.split(content) if f]
        if not fields:
            continue
        if _DECIMAL_COMMA.search(content) and _OTHER_SEPARATOR.search(content):
            raise InputError(
                path,
                f"line {number} has decimal commas ({content[:40]!r}): otreg reads decimal "
                "points (62.5), with commas, semicolons, tabs or spaces between the columns",
            )
        if not rows and not header_seen and not _numeric(fields):
            header_seen = True  # a header such as "x y z" or "x,y,z,label"
            log.debug("%s: skipping header line %d: %r", path, number, line.strip())
            continue
        rows.append(fields)
        line_numbers.append(number)
    if not rows:
        raise InputError(path, "holds no rows of numbers")
    width = len(rows[0])
    for fields, number in zip(rows, line_numbers):
        if len(fields) != width:
            raise InputError(
                path,
                f"line {number} has {len(fields)} values where line {line_numbers[0]} has {width}",
            )
    if width < min_columns:
        raise InputError(
            path, f"has {width} column(s); expected at least {min_columns} (x y z in mm)"
        )
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        for fields, number in zip(rows, line_numbers):
            if not _numeric(fields):
                row = " ".join(fields)
                raise InputError(path, f"line {number} is not a row of numbers: {row!r}") from None
        raise  # pragma: no cover - np.array failed on rows that each parse


def _numeric(fields: list[str]) -> bool:
    try:
        [float(f) for f in fields]
    except ValueError:
        return False
    return True


def read_npy(path: str | Path) -> np.ndarray:
    """A (N, k >= 3) numeric .npy array -> float64 copy. Raises InputError otherwise."""
    path = Path(path)
    _check_npy_header(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(path, f"is not a readable .npy array: {err}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise InputError(path, f"holds a {array.dtype} array; expected numbers (x y z in mm)")
    if array.ndim != 2 or array.shape[1] < 3:
        raise InputError(
            path, f"holds an array of shape {array.shape}; expected (N, 3) x y z in mm"
        )
    return array.astype(np.float64)


def _check_npy_header(path: Path) -> None:
    """The shape a .npy header declares must fit in the file and in the memory budget (numpy
    allocates it before reading: a 100-byte file can ask for terabytes)."""
    from ..limits import check_memory

    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            start = f.tell()
    except Exception as err:  # numpy raises ValueError, OSError, EOFError, SyntaxError ...
        raise InputError(
            path, f"is not a readable .npy array: {' '.join(str(err).split())}"
        ) from None
    if dtype.hasobject:
        return  # np.load refuses pickled arrays with its own message
    count = float(np.prod(shape, dtype=np.float64))
    needed = start + count * dtype.itemsize
    size = path.stat().st_size
    if size < needed:
        raise InputError(
            path,
            f"is truncated: its header declares an array of shape {shape} ({needed:.0f} bytes), "
            f"the file has {size}",
        )
    check_memory(count * max(dtype.itemsize, 8) * 2, f"its {shape} array", source=path)


def read_points(path: str | Path) -> np.ndarray:
    """(N, 3) float64 x y z (mm, RAS+) of a .txt/.csv/.npy point list, in file order."""
    path = Path(path)
    table = read_npy(path) if path.suffix.lower() == ".npy" else read_table(path)
    if table.shape[1] > 3:
        log.debug("%s: using the first 3 of %d columns as x y z", path, table.shape[1])
    return np.ascontiguousarray(table[:, :3])


def read_point_list(path: str | Path) -> PointCloud:
    """Read a .txt/.csv/.npy point list as a :class:`PointCloud` with weight 1 per point."""
    points = read_points(path)
    return PointCloud(
        points=points,
        weights=np.ones(len(points)),
        source=str(path),
        meta={"reader": "numpy" if Path(path).suffix.lower() == ".npy" else "text", "space": "RAS"},
    )


def format_points(points: np.ndarray, *, delimiter: str = " ") -> str:
    """(N, 3) points -> text, one ``x y z`` row per point, ``%.6f`` (micrometre precision)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"expected points of shape (N, 3), got {p.shape}")
    fmt = delimiter.join(["%.6f"] * 3)
    return "".join(fmt % tuple(row) + "\n" for row in p)


def write_points_txt(path: str | Path, points: np.ndarray) -> Path:
    """Write (N, 3) points (mm) atomically: ``x y z`` rows, comma-separated for ``.csv``."""
    delimiter = "," if Path(path).suffix.lower() == ".csv" else " "
    return write_text_atomic(path, format_points(points, delimiter=delimiter))
