"""Atomic writes: a temporary file in the target's folder, renamed onto the target on success.

A run killed half-way (or a writer that raises) never leaves a truncated output that a resumed
batch would trust: either the old file (or none) is there, or the complete new one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError

log = logging.getLogger(__name__)

# Suffixes that only make sense together with the one before them: keep both so that writers
# dispatching on the suffix (nibabel on ``.nii.gz``) still see the right format.
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")

_umask: int | None = None


def _default_mode() -> int:
    """Permissions a plain ``open(path, 'w')`` would give (mkstemp makes 0600 files)."""
    global _umask
    if _umask is None:
        # os.umask can only be read by setting it; do it once.
        _umask = os.umask(0o022)
        os.umask(_umask)
    return 0o666 & ~_umask


def full_suffix(path: str | Path) -> str:
    """'.vtk' for ``a.vtk``, '.nii.gz' for ``a.nii.gz`` (compressed formats keep two)."""
    suffixes = Path(path).suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() in _COMPRESSION_SUFFIXES:
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary name is ``.<stem>.tmp-<random><suffix>`` in the same folder (same file
    system, so ``os.replace`` is atomic; same suffix, so writers that choose the format from
    the suffix work). On any exception, including KeyboardInterrupt, the temporary file is
    deleted and the exception propagates; ``path`` is left untouched.

    Raises:
        OutputError: the folder does not exist or is not writable.
    """
    path = Path(path)
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=suffix, dir=path.parent)
    except OSError as err:
        raise OutputError(
            f"{path}: cannot create a file in {path.parent}: {err.strerror or err}"
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"{path}: the writer did not create its output file")
        # Keep the permissions of the file being replaced, else those of a new file.
        mode = path.stat().st_mode & 0o7777 if path.exists() else _default_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    log.debug("wrote %s", path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``Path(path)``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (``\\n`` line endings kept as given)."""
    return write_bytes_atomic(path, text.encode(encoding))
