"""run.json: what is needed to know how an output was made and to rerun it."""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .._version import __version__

_PACKAGES = ("torch", "pykeops", "numpy", "pyvista", "vtk", "nibabel", "pydantic", "SimpleITK")


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_record(
    *, inputs: dict[str, str | Path], device: str, seed: int, argv: list[str] | None
) -> dict[str, Any]:
    """Versions, device, compiled kernels (see :func:`otreg.native.info`), command line, input
    checksums and seed of one run."""
    from .. import native

    versions: dict[str, str | None] = {"otreg": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv if argv is None else argv),
        "device": device,
        "kernels": native.info(),
        "host": platform.node(),
        "seed": seed,
        "inputs": {
            role: {"path": str(Path(p).resolve()), "sha256": sha256(p)}
            for role, p in inputs.items()
        },
        "versions": versions,
    }
