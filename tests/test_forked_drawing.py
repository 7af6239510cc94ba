"""The report's drawing child forked from a batch worker (otreg.report.forked_child): it draws
the pictures, a missing OpenGL still only skips them with the reason, an unused one is stopped,
and a process with another thread never forks one.

Each test runs in a fork of the process's forkserver (otreg.batch.forking), as a batch worker
does: one thread, the drawing's libraries imported before the fork."""

from __future__ import annotations

import ctypes.util
import multiprocessing
import os

import numpy as np
import pytest
from helpers import otreg_env

from otreg.batch import forking

if "forkserver" not in multiprocessing.get_all_start_methods():
    pytest.skip("no forkserver on this platform", allow_module_level=True)


def _in_a_worker(function, *args):
    """``function(*args)`` in a fresh fork of the server, as a batch worker runs."""
    context = forking.fork_context(otreg_env())
    assert context is not None
    with context.Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(function, args)


def _clouds():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(500, 3)) * 50
    return source, source + 1.0, source + 0.5, rng.random(500)


def _draw_in_a_fork(env: dict[str, str]) -> tuple[str, list[str], str | None]:
    import pyvista.plotting  # noqa: F401  (the batch server imports it: otreg.batch.forking)

    from otreg.report import render

    os.environ.update(env)
    render.fork_drawing_child()
    child = render._waiting
    kind = type(child).__name__

    def no_new_interpreter(folder):
        raise AssertionError("a new interpreter was started")

    render._start_child = no_new_interpreter
    with render.drawing_child_started(True):
        pictures = render.render_pictures(*_clouds(), timeout=120)
    return kind, sorted(pictures.images), pictures.skipped


def test_a_forked_drawing_child_draws_the_pictures():
    kind, images, skipped = _in_a_worker(_draw_in_a_fork, {})
    assert (kind, images, skipped) == ("ForkedChild", ["fields", "overlay"], None)


def test_without_opengl_a_forked_child_skips_the_pictures_and_says_why(tmp_path):
    if ctypes.util.find_library("OSMesa"):
        pytest.skip("libOSMesa is installed: VTK would draw with it, GL cannot be made unavailable")
    # no EGL vendor library and OSMesa forced: VTK finds no OpenGL and kills its process
    env = {
        "__EGL_VENDOR_LIBRARY_FILENAMES": str(tmp_path / "none.json"),
        "VTK_DEFAULT_OPENGL_WINDOW": "vtkOSOpenGLRenderWindow",
    }
    kind, images, skipped = _in_a_worker(_draw_in_a_fork, env)
    assert kind == "ForkedChild" and images == []
    assert skipped and "SIGSEGV" in skipped and "OpenGL" in skipped, skipped


def _unused_child_is_stopped() -> tuple[str, int | None]:
    import pyvista.plotting  # noqa: F401

    from otreg.report import render

    render.fork_drawing_child()
    child = render._waiting
    with render.drawing_child_started(False):  # a case without pictures
        pass
    return type(child).__name__, child.poll()


def test_an_unused_forked_child_is_stopped():
    kind, code = _in_a_worker(_unused_child_is_stopped)
    assert kind == "ForkedChild" and code is not None


def _with_another_thread() -> tuple[bool, bool]:
    import threading

    import pyvista.plotting  # noqa: F401

    from otreg.report import render

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        render.fork_drawing_child()
        return render._waiting is None, "pyvista.plotting" in __import__("sys").modules
    finally:
        stop.set()
        thread.join()


def test_a_process_with_another_thread_forks_no_drawing_child():
    assert _in_a_worker(_with_another_thread) == (True, True)
