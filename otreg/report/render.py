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

from .forked_child import ForkedChild, fork_is_safe

log = logging.getLogger(__name__)

_MIME = {".webp": "image/webp", ".png": "image/png"}


@dataclass
class Pictures:
    """What :func:`render_pictures` made.

    Attributes:
        images: name ("overlay", "fields") -> (MIME type, encoded bytes).
        skipped: why there are no pictures (None when there are).
        seconds: time spent drawing (0 when not tried); for a drawing begun earlier by
            :func:`submit_pictures`, the time waited for it.
    """

    images: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    skipped: str | None = None
    seconds: float = 0.0


def child_environment() -> dict[str, str]:
    """The child's environment: without a display, VTK's EGL window directly (it would try X
    first and print 'bad X server connection'); an explicit VTK_DEFAULT_OPENGL_WINDOW wins.
    numpy without huge pages, as in the command's own process (:mod:`otreg.cli`)."""
    env = dict(os.environ)
    env.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")  # as the command's own process (otreg.cli)
    if not env.get("DISPLAY") and "VTK_DEFAULT_OPENGL_WINDOW" not in env:
        env["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkEGLRenderWindow"
    return env


#: the drawing child started by :func:`drawing_child_started`, waiting for its folder
_waiting: subprocess.Popen | ForkedChild | None = None


@dataclass
class _Drawing:
    """A drawing under way: its child, its folder, the clouds it draws, when it began."""

    child: subprocess.Popen | ForkedChild
    folder: tempfile.TemporaryDirectory
    clouds: tuple[np.ndarray, ...]
    started: float

    def discard(self) -> None:
        _stop(self.child)
        self.folder.cleanup()


#: the drawing :func:`submit_pictures` began, for :func:`render_pictures` to collect
_submitted: _Drawing | None = None


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
    """Start the drawing child now, for the pictures drawn within the block.

    Python, pyvista and VTK take seconds to start: a child started before the registration
    imports them while the registration runs, then waits for its folder. Left unused (the
    block failed, or drew no pictures), it is stopped on exit, as is a drawing that
    :func:`submit_pictures` began and nothing collected.
    """
    global _waiting, _submitted
    if not enabled:
        if _waiting is not None:  # one forked in advance, not needed
            _stop(_waiting)
            _waiting = None
        yield
        return
    try:
        if _waiting is None:  # else the one forked in advance
            _waiting = _start_child("-")
    except OSError:  # render_pictures starts its own and says why it cannot
        _waiting = None
    try:
        yield
    finally:
        child, _waiting = _waiting, None
        if child is not None:
            _stop(child)
        drawing, _submitted = _submitted, None
        if drawing is not None:
            drawing.discard()


def fork_drawing_child() -> None:
    """Fork the drawing child now, if this process may (:mod:`otreg.report.forked_child`: a
    batch worker, its server having imported the drawing's libraries, before it starts its
    threads); the next :func:`drawing_child_started` block takes it instead of starting a
    new interpreter."""
    global _waiting
    if _waiting is None and fork_is_safe("pyvista.plotting"):
        from ._draw import serve

        try:
            _waiting = ForkedChild(
                serve, child_environment(), [sys.executable, "-m", "otreg.report._draw", "-"]
            )
        except OSError:  # no fork: drawing_child_started starts one its own way
            _waiting = None


def _stop(child: subprocess.Popen | ForkedChild) -> None:
    if child.poll() is None:
        child.kill()
    child.communicate()


def _begin(
    source: np.ndarray, target: np.ndarray, warped: np.ndarray, confidence: np.ndarray
) -> _Drawing:
    """Write the clouds to a new folder and hand it to the waiting child (or a new one).

    Raises:
        OSError: no child could start.
    """
    import time

    global _waiting
    started = time.perf_counter()
    folder = tempfile.TemporaryDirectory(prefix="otreg-report-")
    np.savez(
        Path(folder.name) / "clouds.npz",
        source=source,
        target=target,
        warped=warped,
        displacement_mm=np.linalg.norm(warped - source, axis=1),
        confidence=confidence,
    )
    child, _waiting = _waiting, None
    if child is not None:
        try:
            child.stdin.write(folder.name + "\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]  # communicate() closes it
        except OSError:  # it died (a broken pipe): a new one draws
            _stop(child)
            child = None
    if child is None:
        try:
            child = _start_child(folder.name)
        except OSError:
            folder.cleanup()
            raise
    return _Drawing(child, folder, (source, target, warped, confidence), started)


def submit_pictures(
    source: np.ndarray, target: np.ndarray, warped: np.ndarray, confidence: np.ndarray
) -> None:
    """Begin drawing these clouds now, inside a :func:`drawing_child_started` block: a
    :func:`render_pictures` call with the same clouds then collects the pictures instead of
    drawing them, so that the drawing overlaps the work in between (otreg writes its other
    outputs)."""
    global _submitted
    if _submitted is not None:
        _submitted.discard()
        _submitted = None
    try:
        _submitted = _begin(source, target, warped, confidence)
    except OSError:  # render_pictures tries again and says why it cannot
        _submitted = None


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

    A drawing of the same clouds that :func:`submit_pictures` began is collected instead (the
    timeout counts from its start; ``seconds`` is then the time waited for it).

    Returns:
        :class:`Pictures` (``skipped`` says why when there are none; never raises for a
        failed renderer).
    """
    import time

    global _submitted
    called = time.perf_counter()
    drawing, _submitted = _submitted, None
    clouds = (source, target, warped, confidence)
    if drawing is not None and not all(map(np.array_equal, drawing.clouds, clouds)):
        drawing.discard()  # other clouds: draw these
        drawing = None
    if drawing is None:
        try:
            drawing = _begin(*clouds)
        except OSError as err:
            return _skipped(f"the renderer could not start: {err}", called)
    try:
        remaining = max(0.0, timeout - (time.perf_counter() - drawing.started))
        child = drawing.child
        try:
            _, stderr = child.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            _stop(child)
            return _skipped(
                f"drawing took longer than output.report_render_timeout = {timeout:g} s",
                called,
            )
        if child.returncode != 0:
            return _skipped(_why(child.returncode, stderr), called)
        images = {}
        for path in sorted(Path(drawing.folder.name).iterdir()):
            if path.suffix in _MIME:
                images[path.stem] = (_MIME[path.suffix], path.read_bytes())
    finally:
        drawing.folder.cleanup()
    seconds = time.perf_counter() - called  # what the pictures added here (waiting included)
    if not images:
        return _skipped("the renderer wrote no picture", called)
    log.info("report pictures drawn in %.1f s", seconds)
    return Pictures(images, None, seconds)


def _skipped(reason: str, started: float) -> Pictures:
    import time

    log.warning("report.html without pictures: %s", reason)
    return Pictures({}, reason, time.perf_counter() - started)
