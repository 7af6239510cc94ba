"""Build of otreg's compiled CPU kernels, the extension module ``otreg.native._kernels``.

Everything else about the package is in pyproject.toml. The kernels are compiled by the
package build (``pip install``, ``pip wheel``), never at run time: a wheel needs no compiler.

Flags: portable by default, so that a wheel runs on any CPU of its platform: on x86-64 the
x86-64-v2 level (SSE4.2, POPCNT: every x86-64 CPU since about 2009), elsewhere the
compiler's default. ``OTREG_ARCH_FLAGS`` replaces that choice at build time, e.g.
``OTREG_ARCH_FLAGS="-march=native" pip install -e .`` for a build that only runs on CPUs like
the one it was built on (benchmarks/bench_builds.py compares the builds).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shlex
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, has_flag
from pybind11.setup_helpers import build_ext as pybind11_build_ext
from setuptools import setup

SOURCE = "otreg/native/_kernels.cpp"
VERSION_FILE = "otreg/_version.py"
ARCH_ENV = "OTREG_ARCH_FLAGS"


def default_arch_flags() -> list[str]:
    if platform.machine().lower() in ("x86_64", "amd64"):
        return ["-march=x86-64-v2"]
    return []


class build_ext(pybind11_build_ext):
    """Adds the optimisation and architecture flags, and records them in the module."""

    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "msvc":
            flags, link = ["/O2"], []
        else:
            arch = os.environ.get(ARCH_ENV)
            arch_flags = shlex.split(arch) if arch is not None else default_arch_flags()
            if (
                arch is None
            ):  # the default only where the compiler knows it (gcc >= 11, clang >= 12)
                arch_flags = [f for f in arch_flags if has_flag(self.compiler, f)]
            flags, link = ["-O3", "-pthread", *arch_flags], ["-pthread"]
        source_hash = hashlib.sha256(Path(SOURCE).read_bytes()).hexdigest()
        found = re.search(r'__version__ = "([^"]+)"', Path(VERSION_FILE).read_text())
        version = found.group(1) if found else "unknown"
        for ext in self.extensions:
            ext.extra_compile_args += flags
            ext.extra_link_args += link
            ext.define_macros += [
                ("OTREG_BUILD_FLAGS", _c_string(" ".join(["-std=c++17", *flags]))),
                ("OTREG_SOURCE_SHA256", _c_string(source_hash)),
                ("OTREG_VERSION", _c_string(version)),
            ]
        super().build_extensions()


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


setup(
    ext_modules=[Pybind11Extension("otreg.native._kernels", [SOURCE], cxx_std=17)],
    cmdclass={"build_ext": build_ext},
)
