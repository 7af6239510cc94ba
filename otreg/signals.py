"""Signal handlers that stop a run by raising an exception, never inside an import."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

Handler = Callable[[int, Any], None]

_RETRY_S = 0.05


def outside_imports(handler: Handler) -> Handler:
    """``handler`` as a signal handler that is put off while a module is being imported: the
    signal is sent again every 50 ms until no import is under way, then handled.

    An exception raised inside an import can crash the interpreter: VTK's Python wrapping sets
    its modules up from C, importing further modules as it goes, and a failed import there
    dereferenced NULL (SIGSEGV in libvtkWrappingPythonCore: batch workers terminated while
    reading their first VTK file died without recording that they stopped).
    """

    def put_off_during_imports(signum: int, frame: FrameType | None) -> None:
        if _importing(frame):
            again = threading.Timer(_RETRY_S, os.kill, (os.getpid(), signum))
            again.daemon = True
            again.start()
            return
        handler(signum, frame)

    return put_off_during_imports


def _importing(frame: FrameType | None) -> bool:
    """Whether the interrupted Python code runs inside the import machinery."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False
