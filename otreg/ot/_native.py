"""The compiled CPU kernels of the multiscale solver (``_native.cpp``), built on first use.

Building the truncated kernels is a sweep over tens of millions of candidate pairs; in torch
every candidate becomes a tensor element (indices, costs, masks), which took 30 s of a 37 s
100k-point solve on one thread (measured). The C++ sweep keeps only what it keeps.

The source is compiled once per source, compiler and CPU (``-march=native``) with the system
C++ compiler (the one pykeops needs) into ``$OTREG_CACHE_DIR`` (default
``~/.cache/otreg``), written to a temporary name and renamed: concurrent batch jobs never load
a half-written library. Where no compiler works, or ``OTREG_NATIVE=0``, :func:`library`
returns None and the solver uses its torch implementation (slower, same results).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

log = logging.getLogger(__name__)
# torch warns on every sparse CSR tensor it builds; the kernels built on the compiled ones are
# such tensors, and the warning says nothing to a user of otreg
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

SOURCE = Path(__file__).with_name("_native.cpp")
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread"]

_i64, _i32, _f32, _f64 = (
    ctypes.POINTER(t) for t in (ctypes.c_int64, ctypes.c_int32, ctypes.c_float, ctypes.c_double)
)
_SIGNATURES = {
    "otreg_c_transform": (
        None,
        [ctypes.c_int64, _f64, ctypes.c_int64, _f64, ctypes.c_int64, _f64, _f64, ctypes.c_int],
    ),
    "otreg_rounded_plan_cost": (
        ctypes.c_double,
        [
            ctypes.c_int64,
            _i64,
            _i32,
            _f64,
            ctypes.c_int64,
            _f64,
            ctypes.c_int64,
            _f64,
            _f64,
            _f64,
            _f64,
            ctypes.c_double,
            ctypes.c_int,
        ],
    ),
}
for _suffix, _real, _p in (("f32", ctypes.c_float, _f32), ("f64", ctypes.c_double, _f64)):
    _SIGNATURES |= {
        f"otreg_truncate_{_suffix}": (
            ctypes.c_void_p,
            [
                ctypes.c_int64,
                _p,
                ctypes.c_int64,
                _p,
                ctypes.c_int64,
                _p,
                _p,
                _real,
                _real,
                _p,
                _i64,
                ctypes.c_int,
            ],
        ),
        f"otreg_pair_{_suffix}": (
            ctypes.c_void_p,
            [
                ctypes.c_int64,
                _p,
                _p,
                ctypes.c_int64,
                _p,
                _p,
                ctypes.c_int64,
                _p,
                _p,
                _p,
                _p,
                _real,
                _real,
                ctypes.c_int,
                _i64,
                ctypes.c_int,
            ],
        ),
        f"otreg_take_pair_{_suffix}": (
            None,
            [ctypes.c_void_p, _i32, _i32, _p, _p, _p, _i32, _i32, _p, _p, _p],
        ),
        f"otreg_select_{_suffix}": (
            ctypes.c_void_p,
            [ctypes.c_int64, _i64, _i32, _p, _p, _real, _real, _p, _i64, ctypes.c_int],
        ),
        f"otreg_row_spread_{_suffix}": (_real, [ctypes.c_int64, _i32, _i32, _p, ctypes.c_int]),
        f"otreg_take_{_suffix}": (None, [ctypes.c_void_p, _i32, _p, _p]),
    }


def cache_dir() -> Path:
    return Path(os.environ.get("OTREG_CACHE_DIR") or Path.home() / ".cache" / "otreg")


def _compiler() -> str | None:
    return (
        os.environ.get("CXX")
        or shutil.which("c++")
        or shutil.which("g++")
        or shutil.which("clang++")
    )


def _cpu_signature() -> str:
    """What -march=native depends on: the machine and (Linux) the CPU's feature flags."""
    try:
        flags = next(
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        flags = platform.processor()
    return f"{platform.machine()} {flags}"


def _compile(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(
        "\n".join([SOURCE.read_text(), compiler, version, *FLAGS, _cpu_signature()]).encode()
    ).hexdigest()[:16]
    target = cache_dir() / f"otreg_native_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("compiling otreg's CPU kernels into %s (once)", target)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run(
            [compiler, *FLAGS, str(SOURCE), "-o", str(built)],
            check=True,
            capture_output=True,
            text=True,
        )
        os.replace(built, target)
    return target


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None (no working compiler, or ``OTREG_NATIVE=0``)."""
    if os.environ.get("OTREG_NATIVE", "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        log.warning("no C++ compiler found: the multiscale solver uses its slower torch kernels")
        return None
    try:
        lib = ctypes.CDLL(str(_compile(compiler)))
    except (OSError, subprocess.CalledProcessError) as err:
        detail = (getattr(err, "stderr", "") or str(err)).strip().splitlines()[-3:]
        log.warning(
            "could not build otreg's CPU kernels (%s): the solver and the smoothing "
            "fields use dense kernels (slower)",
            " / ".join(detail),
        )
        return None
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels are available and can take these tensors (float32 or
    float64, on the CPU)."""
    return (
        all(t.device.type == "cpu" and t.dtype in _SUFFIX for t in tensors)
        and library() is not None
    )


_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_POINTER = {torch.float32: _f32, torch.float64: _f64, torch.int32: _i32, torch.int64: _i64}


def typed(name: str, dtype: torch.dtype):
    """The kernel ``name`` for real type ``dtype`` (e.g. otreg_expand_f32)."""
    return getattr(library(), f"{name}_{_SUFFIX[dtype]}")


def ptr(t: torch.Tensor):
    """ctypes pointer to the data of a contiguous CPU tensor."""
    if not t.is_contiguous():
        raise ValueError("native kernels need contiguous tensors")
    return ctypes.cast(t.data_ptr(), _POINTER[t.dtype])


def threads() -> int:
    return torch.get_num_threads()
