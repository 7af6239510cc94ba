"""otreg's compiled CPU kernels: the extension module ``_kernels`` (``_kernels.cpp``).

The solver's truncated kernels, its certificate and the smoothing fields sweep tens of
millions of candidate pairs; in torch every candidate becomes a tensor element, in C++ only
what is kept is written. The extension is built by the package build (``pip install``; see
setup.py), never at run time: a wheel needs no compiler, and every job of a cluster array loads
the same binary.

- :func:`load`: the extension, or None (not built, built from another source, or
  ``OTREG_NATIVE=0``); a missing or stale extension is logged once, as a warning: the solver
  and the smoothing fields then use their torch kernels (same results, far slower on large
  clouds, as the warning says; benchmarks/README.md, design measurements), and the SVF fields
  torch's grid_sample.
- :func:`usable`: whether tensors can go to the compiled kernels.
- :func:`info`: which kernels a run uses, for run.json and metrics.json.
- :mod:`otreg.native.kernels`: the typed wrappers (tensors in, tensors out, torch's thread
  count, C++ errors turned into otreg's); :mod:`otreg.native.gaussian_average`, the smoothing
  fields' kernel average; :mod:`otreg.native.morton`, the curve order the kernels run fastest on.

This package imports neither torch nor the solver when imported: ``import otreg`` stays light.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DISABLE_ENV = "OTREG_NATIVE"  # "0": use the torch kernels (for comparisons and tests)
SOURCE = Path(__file__).with_name("_kernels.cpp")  # present in a source tree, not in a wheel
REBUILD = (
    "build them with `pip install -e .` in the source tree (needs a C++17 compiler) "
    "or install a wheel of otreg"
)


@functools.cache
def _loaded() -> tuple[ModuleType | None, str]:
    if os.environ.get(DISABLE_ENV, "1") == "0":
        log.info("%s=0: the solver and the smoothing fields use their torch kernels", DISABLE_ENV)
        return None, f"disabled by {DISABLE_ENV}=0"
    try:
        from . import _kernels  # type: ignore[attr-defined]
    except ImportError as err:
        reason = f"otreg.native._kernels cannot be imported ({err})"
        log.warning(
            "%s: the solver and the smoothing fields use their torch kernels, 10-100x slower "
            "on large clouds; %s",
            reason,
            REBUILD,
        )
        return None, reason
    if SOURCE.exists():
        source_hash = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
        if source_hash != _kernels.SOURCE_SHA256:
            reason = f"otreg.native._kernels was built from another {SOURCE.name} than {SOURCE}"
            log.warning(
                "%s: the solver and the smoothing fields use their torch kernels, 10-100x "
                "slower on large clouds; re-%s",
                reason,
                REBUILD,
            )
            return None, reason
    return _kernels, ""


def load() -> ModuleType | None:
    """The compiled kernels module, or None (then a warning was logged, once)."""
    return _loaded()[0]


def available() -> bool:
    return load() is not None


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels are available and can take these tensors (float32 or
    float64, on the CPU)."""
    import torch

    return (
        all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors)
        and load() is not None
    )


def info() -> dict[str, Any]:
    """Which CPU kernels this process uses, as run.json and metrics.json record it:
    ``backend`` "native" (the compiled extension, with its version, build flags, compiler and
    source checksum) or "torch" (with the reason)."""
    module, reason = _loaded()
    if module is None:
        return {"backend": "torch", "reason": reason}
    return {
        "backend": "native",
        "version": module.VERSION,
        "build_flags": module.BUILD_FLAGS,
        "compiler": module.COMPILER,
        "source_sha256": module.SOURCE_SHA256,
    }


__all__ = ["DISABLE_ENV", "available", "info", "load", "usable"]
