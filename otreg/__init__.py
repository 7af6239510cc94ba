"""otreg: register medical point clouds (lungs) with optimal transport.

Public API (imported lazily so that ``import otreg`` stays instant and torch-free)::

    import otreg
    done = otreg.run("exhale.vtk", "inhale.vtk", "out/")  # what `otreg register` does
    otreg.evaluate("out/", "exhale_landmarks.txt", "inhale_landmarks.txt")
    otreg.warp("out/", "exhale_landmarks.txt", "moved.txt")
    otreg.write_report("out/")                       # out/report.html again (`otreg report`)

    source = otreg.load("exhale.vtk")                # or step by step, in memory
    target = otreg.load("inhale.vtk")
    result = otreg.register(source, target)          # RegistrationResult
    moved = result.transform(source.points)          # (N, 3) mm, world RAS
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

_LAZY = {
    "PointCloud": ("otreg.pointcloud", "PointCloud"),
    "Config": ("otreg.config", "Config"),
    "load_config": ("otreg.config", "load_config"),
    "preset_for": ("otreg.presets", "preset_for"),
    "load": ("otreg.io", "load"),
    "register": ("otreg.pipeline", "register"),
    "run": ("otreg.runner", "run"),
    "RunResult": ("otreg.runner", "RunResult"),
    "evaluate": ("otreg.evaluation", "evaluate"),
    "warp": ("otreg.warping", "warp"),
    "write_report": ("otreg.report.build", "write_report"),
    "RegistrationResult": ("otreg.pipeline", "RegistrationResult"),
    "Transform": ("otreg.transforms", "Transform"),
}

__all__ = ["__version__", *_LAZY]  # noqa: PLE0604 (a dict's keys are strings)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'otreg' has no attribute {name!r}")
