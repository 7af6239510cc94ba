"""Thin helpers around VTK readers and writers: silence VTK's console output and collect it.

VTK reports problems by printing (vtkOutputWindow, vtkLogger) rather than raising, and pyvista
forwards them to the *root* logger. A library must do neither: here the messages are captured
while a reader or writer runs, so the caller can turn them into one :class:`InputError` (or
:class:`OutputError`) naming the file. Imported lazily (only by meshes.py functions).
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from vtkmodules.vtkCommonCore import vtkLogger, vtkOutputWindow, vtkStringOutputWindow

# suffix -> (module, reader class); vtkDataSetReader picks PolyData or UnstructuredGrid itself.
READERS = {
    ".vtk": ("vtkmodules.vtkIOLegacy", "vtkDataSetReader"),
    ".vtp": ("vtkmodules.vtkIOXML", "vtkXMLPolyDataReader"),
    ".vtu": ("vtkmodules.vtkIOXML", "vtkXMLUnstructuredGridReader"),
    ".stl": ("vtkmodules.vtkIOGeometry", "vtkSTLReader"),
    ".ply": ("vtkmodules.vtkIOPLY", "vtkPLYReader"),
    ".obj": ("vtkmodules.vtkIOGeometry", "vtkOBJReader"),
}

FORMAT_NAMES = {
    ".vtk": "legacy VTK",
    ".vtp": "VTK XML PolyData",
    ".vtu": "VTK XML UnstructuredGrid",
    ".stl": "STL",
    ".ply": "PLY",
    ".obj": "Wavefront OBJ",
}

# "vtkDataSetReader (0x55d1...): Unrecognized file type" -> "Unrecognized file type"
_PREFIX = re.compile(r"^\s*\w+ \(0x[0-9a-fA-F]+\):\s*", re.MULTILINE)
_LOCATION = re.compile(r"^(ERROR|Warning|Generic Warning): In .*?, line \d+\s*$", re.MULTILINE)


def vtk_class(module: str, name: str):
    """Import ``module`` and return its class ``name`` (keeps VTK imports out of module scope)."""
    return getattr(importlib.import_module(module), name)


@dataclass
class Messages:
    """Errors and warnings VTK emitted inside :func:`capture`."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True if VTK reported an error. The legacy reader only *warns* on truncated binary
        data ("Error reading binary data!") and returns zeros, so such warnings count too."""
        return bool(self.errors) or any("error" in w.lower() for w in self.warnings)

    def first(self) -> str:
        """The first problem, in one line without VTK's source location and object address.

        Pipeline messages ("Algorithm vtkPLYReader returned failure for request ...") say
        nothing to a user; they are used only when the reader itself said nothing.
        """
        problems = [
            _clean(t) for t in [*self.errors, *(w for w in self.warnings if "error" in w.lower())]
        ]
        problems = [p for p in problems if p]  # some readers report an error with no text
        useful = [p for p in problems if not _PIPELINE.search(p)]
        if useful:
            return useful[0]
        return "the reader failed (not a valid file of this format?)" if problems else ""


_PIPELINE = re.compile(
    r"^Algorithm \w+ .*(returned failure|did not create output)|^No update piece"
)
_FOR_FILE = re.compile(r"\s*for file:.*$")


def _clean(text: str) -> str:
    text = _LOCATION.sub("", text)
    text = _PREFIX.sub("", text)
    text = " ".join(text.split())
    return _FOR_FILE.sub("", text)  # the caller names the file already


class _Collector:
    # VTK passes the message text as call data only to callables that declare this attribute.
    CallDataType = "string0"

    def __init__(self, sink: list[str]):
        self.sink = sink

    def __call__(self, _obj, _event, message=None) -> None:
        self.sink.append(str(message or ""))


@contextlib.contextmanager
def capture() -> Iterator[Messages]:
    """Run VTK code with its console output suppressed and its errors/warnings collected.

    Not thread-safe: the VTK output window is a process-wide singleton.
    """
    messages = Messages()
    window = vtkStringOutputWindow()
    # VTK's stubs know only the numeric event ids; VTK takes the names as well
    window.AddObserver("ErrorEvent", _Collector(messages.errors))  # type: ignore[arg-type]
    window.AddObserver("WarningEvent", _Collector(messages.warnings))  # type: ignore[arg-type]
    previous_window = vtkOutputWindow.GetInstance()
    previous_verbosity = vtkLogger.GetCurrentVerbosityCutoff()
    vtkOutputWindow.SetInstance(window)
    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_OFF)
    try:
        yield messages
    finally:
        vtkOutputWindow.SetInstance(previous_window)
        vtkLogger.SetStderrVerbosity(previous_verbosity)
