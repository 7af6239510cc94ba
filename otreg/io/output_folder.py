"""Output folders that otreg owns: checked before any work, locked while written, marked.

Why: ``-o DIR --overwrite`` used to delete whatever DIR held (the inputs themselves, files of
other programs), and two runs writing one OUT could both succeed, the second silently replacing
the first's result. So:

- :func:`check_output_location`: OUT must be creatable (not under a file, a writable folder,
  a name the file system takes) and, when it exists and is not empty, replaceable: only with
  ``overwrite``, only if otreg wrote it (it holds :data:`MARKER`), and never if an input lies
  inside it. Run before loading anything.
- :func:`output_lock`: an exclusive ``flock`` on ``.OUT.lock`` beside OUT, held from that
  check to the final rename; a second run on the same OUT fails at once (OutputError, exit 2).
  While it is held, hidden ``.OUT.tmp-*`` / ``.OUT.old-*`` folders beside OUT can only be
  left-overs of killed runs: :func:`remove_stale_folders` deletes them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import OutputError

log = logging.getLogger(__name__)

#: file in every output folder otreg writes: only folders holding it are replaced by --overwrite
MARKER = ".otreg"
MARKER_TEXT = "This folder was written by otreg; 'otreg register --overwrite' may replace it.\n"

# what write_registration adds to OUT's name for its temporary and backup folders
_SIBLING_SUFFIX = len(".tmp-12345678")

# locks this process holds: resolved OUT -> [fd, depth] (flock is per open file, so a second
# open of the lock file by the same process would conflict with itself)
_held: dict[Path, list[int]] = {}


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _existing_ancestor(path: Path) -> Path:
    """The nearest of ``path``'s ancestors (or itself) that exists."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def check_output_location(
    out: str | Path, overwrite: bool, inputs: Iterable[str | Path] = ()
) -> None:
    """Fail early (before any work) if ``out`` cannot be (re)written.

    Raises:
        OutputError: a path component is too long; OUT or an ancestor is a file; the nearest
            existing ancestor is not a writable folder; OUT is not empty and ``overwrite`` is
            False; OUT is not empty and otreg did not write it (no :data:`MARKER`); an input
            lies inside OUT.
    """
    out = Path(out)
    absolute = Path(os.path.abspath(out))
    for part in absolute.parts[1:]:
        room = _name_max(_existing_ancestor(absolute.parent))
        if len(os.fsencode(part)) + 1 + _SIBLING_SUFFIX > room:
            raise OutputError(
                f"{out}: the name {part[:40]!r}... is too long for the file system "
                f"({len(os.fsencode(part))} bytes; at most {room - 1 - _SIBLING_SUFFIX} here)"
            )
    existing = _existing_ancestor(absolute)
    if existing == absolute:
        if not absolute.is_dir():
            raise OutputError(f"{out}: exists and is not a folder")
    elif not existing.is_dir():
        raise OutputError(f"{out}: cannot be created: {existing} is a file, not a folder")
    folder = existing if existing != absolute else absolute.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: cannot be created: {folder} is not writable")
    if absolute.is_dir() and any(absolute.iterdir()):
        if not overwrite:
            raise OutputError(
                f"{out}: output folder exists and is not empty; pass --overwrite to replace it"
            )
        resolved = absolute.resolve()
        for item in inputs:
            path = Path(os.path.abspath(item)).resolve()
            if path == resolved or resolved in path.parents:
                raise OutputError(
                    f"{out}: the input {item} lies inside this output folder; --overwrite "
                    "would delete it: choose another output folder"
                )
        if not (absolute / MARKER).is_file():
            raise OutputError(
                f"{out}: not an otreg output folder (no {MARKER} file in it), so --overwrite "
                "will not replace it: choose another output folder or empty this one yourself"
            )


def write_marker(folder: Path) -> None:
    """Mark ``folder`` as written by otreg (see :data:`MARKER`)."""
    (folder / MARKER).write_text(MARKER_TEXT)


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on OUT (``.OUT.lock`` beside it) for the block; re-entrant.

    Creates OUT's parent folders (removing those it created, if empty, when the block fails).
    The lock file is removed when the outermost block ends.

    Raises:
        OutputError: another process holds the lock (another otreg run writes OUT), or the
            lock file cannot be created.
    """
    out = Path(os.path.abspath(out))
    key = Path(os.path.realpath(out.parent)) / out.name
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    created = _make_parents(out.parent)
    ok = False
    try:
        fd = _acquire(out)
        ok = True
    finally:
        if not ok:
            _remove_empty(created)
    _held[key] = [fd, 1]
    failed = True
    try:
        yield
        failed = False
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.unlink(lock_path(out))  # before unlocking: a waiter then finds a new file
        os.close(fd)
        if failed:
            _remove_empty([p for p in created if not out.exists()])


def _acquire(out: Path) -> int:
    path = lock_path(out)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputError(
                f"{out}: cannot create the lock file {path}: {err.strerror or err}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_pid(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (process {holder})" if holder else ""
                raise OutputError(
                    f"{out}: another otreg run{who} is writing this output folder; wait for "
                    "it to finish or choose another folder"
                ) from None
            raise OutputError(f"{out}: cannot lock {path}: {err.strerror or err}") from None
        # The holder before us may have removed the file after we opened it: then our lock is
        # on a file nobody else will see; start again with the file that is there now.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(os.pread(fd, 32, 0).decode().strip()))
    return ""


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p ``folder``; the folders created, deepest first."""
    missing = []
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _remove_empty(missing)
        raise OutputError(f"{folder}: cannot be created: {err.strerror or err}") from None
    return missing


def _remove_empty(folders: Iterable[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def remove_stale_folders(out: Path) -> None:
    """Delete ``.OUT.tmp-*`` and ``.OUT.old-*`` folders of killed runs (call under the lock)."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(tmp|old)-[0-9a-f]{{8}}")
    if not out.parent.is_dir():
        return
    for sibling in out.parent.iterdir():
        if not pattern.fullmatch(sibling.name) or sibling.is_symlink() or not sibling.is_dir():
            continue
        # only folders otreg made: marked, or empty (killed before the marker was written)
        if (sibling / MARKER).is_file() or not any(sibling.iterdir()):
            log.info("removing %s, left by a killed run", sibling)
            shutil.rmtree(sibling, ignore_errors=True)


def check_output_file(path: str | Path, overwrite: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Fail early (before any work) if the output file ``path`` cannot be (re)written.

    Raises:
        OutputError: the name is too long for the file system (with the temporary name an
            atomic write needs), the folder is missing, a file or not writable, ``path`` is a
            folder, it exists and ``overwrite`` is False, or it is one of ``inputs``.
    """
    path = Path(path)
    folder = Path(os.path.abspath(path)).parent
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise OutputError(f"{path}: cannot be written: the folder {folder} {what}")
    room = _name_max(folder) - len(".tmp-12345678") - 1
    if len(os.fsencode(path.name)) > room:
        raise OutputError(
            f"{path.name[:40]}...: the file name is too long for the file system "
            f"({len(os.fsencode(path.name))} bytes; at most {room} here)"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot be written: {folder} is not writable")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists; pass --overwrite to replace it")
    if path.exists() and any(path.resolve() == Path(item).resolve() for item in inputs):
        raise OutputError(f"{path}: is an input of this command; write the result elsewhere")
