"""The report's pictures, drawn in a child process with a time limit.

VTK does not raise when no OpenGL works: the process dies (segfault, exit 139), and a broken
GL stack may hang. So the pictures are drawn by ``python -m otreg.report._draw`` in a child
process; when it fails or runs out of time, :func:`render_pictures` says why, and the report is
written without pictures.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_MIME = {".webp": "image/webp", ".png": "image/png"}


@dataclass
class Pictures:
    """What :func:`render_pictures` made.

    Attributes:
        images: name ("overlay", "fields") -> (MIME type, encoded bytes).
        skipped: why there are no pictures (None when there are).
        seconds: time spent drawing (0 when not tried).
    """

    images: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    skipped: str | None = None
    seconds: float = 0.0


def child_environment() -> dict[str, str]:
    """The child's environment: without a display, VTK's EGL window directly (it would try X
    first and print 'bad X server connection'); an explicit VTK_DEFAULT_OPENGL_WINDOW wins."""
    env = dict(os.environ)
    if not env.get("DISPLAY") and "VTK_DEFAULT_OPENGL_WINDOW" not in env:
        env["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkEGLRenderWindow"
    return env


#: the drawing child started by :func:`drawing_child_started`, waiting for its folder
_waiting: subprocess.Popen | None = None


def _start_child(folder: str) -> subprocess.Popen:
    """``python -m otreg.report._draw FOLDER`` ("-": the folder comes on stdin)."""
    return subprocess.Popen(
        [sys.executable, "-m", "otreg.report._draw", folder],
        env=child_environment(),
        stdin=subprocess.PIPE if folder == "-" else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def drawing_child_started(enabled: bool = True) -> Iterator[None]:
    """Start the drawing child now, for the :func:`render_pictures` call within the block.

    Python, pyvista and VTK take seconds to start: a child started before the registration
    imports them while the registration runs (benchmarks/README.md), then waits for its
    folder. Left unused (the block failed, or drew no pictures), it is stopped on exit.
    """
    global _waiting
    if not enabled:
        yield
        return
    try:
        _waiting = _start_child("-")
    except OSError:  # render_pictures starts its own and says why it cannot
        _waiting = None
    try:
        yield
    finally:
        child, _waiting = _waiting, None
        if child is not None:
            _stop(child)


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.kill()
    child.communicate()


def _why(returncode: int, stderr: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        reason = f"the renderer was killed by {name}"
        if -returncode == signal.SIGSEGV:
            reason += " (VTK found no working OpenGL: EGL/Mesa or OSMesa, or an X display)"
    else:
        reason = f"the renderer failed (exit {returncode})"
    stderr = re.sub(r"\x1b\[[0-9;]*m", "", stderr)  # VTK's log colours
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return reason
    last = lines[-1].split("| ", 1)[-1]  # without VTK's date, time and thread prefix
    return f"{reason}: {last.strip()[:300]}"


def render_pictures(
    source: np.ndarray,
    target: np.ndarray,
    warped: np.ndarray,
    confidence: np.ndarray,
    *,
    timeout: float,
) -> Pictures:
    """Draw the overlay and field pictures of a registration, off-screen, in a child process.

    Args:
        source: (N, 3) source points, mm world RAS; ``warped``: (N, 3) the same, moved.
        target: (M, 3) target points, mm world RAS.
        confidence: (N,) match confidence of the source points.
        timeout: seconds; the child is killed after that and the pictures skipped.

    Returns:
        :class:`Pictures` (``skipped`` says why when there are none; never raises for a
        failed renderer).
    """
    import time

    global _waiting
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="otreg-report-") as folder:
        np.savez(
            Path(folder) / "clouds.npz",
            source=source,
            target=target,
            warped=warped,
            displacement_mm=np.linalg.norm(warped - source, axis=1),
            confidence=confidence,
        )
        child, _waiting = _waiting, None
        try:
            if child is None or child.poll() is not None:  # none started early, or it died
                if child is not None:
                    _stop(child)
                child = _start_child(folder)
                _, stderr = child.communicate(timeout=timeout)
            else:
                _, stderr = child.communicate(input=folder + "\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(child)  # type: ignore[arg-type]
            return _skipped(
                f"drawing took longer than output.report_render_timeout = {timeout:g} s",
                started,
            )
        except OSError as err:
            return _skipped(f"the renderer could not start: {err}", started)
        if child.returncode != 0:
            return _skipped(_why(child.returncode, stderr), started)
        images = {}
        for path in sorted(Path(folder).iterdir()):
            if path.suffix in _MIME:
                images[path.stem] = (_MIME[path.suffix], path.read_bytes())
    seconds = time.perf_counter() - started
    if not images:
        return _skipped("the renderer wrote no picture", started)
    log.info("report pictures drawn in %.1f s", seconds)
    return Pictures(images, None, seconds)


def _skipped(reason: str, started: float) -> Pictures:
    import time

    log.warning("report.html without pictures: %s", reason)
    return Pictures({}, reason, time.perf_counter() - started)
