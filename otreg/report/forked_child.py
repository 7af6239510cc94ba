"""The drawing child as a fork of a process that has imported VTK already (a batch worker).

A new ``python -m otreg.report._draw`` imports Python, pyvista, VTK's rendering, matplotlib
and Pillow again: about 0.8 s of a core per registration, which a batch of many cases on a few
cores pays in full. A batch worker (:mod:`otreg.batch.forking`) finds these modules imported
by its server and runs no other thread when its drawing child starts, so that it can fork the
child instead. :class:`ForkedChild` has the part of :class:`subprocess.Popen` that
:mod:`otreg.report.render` uses, so the rest of the drawing (its time limit, a child killed by
a missing OpenGL) works the same.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any


def fork_is_safe(module: str) -> bool:
    """Whether this process may fork a child that needs ``module``: it is imported, and no
    other thread runs (Linux: one task in /proc/self/task; a fork copies one thread only)."""
    if module not in sys.modules or not hasattr(os, "fork"):
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


class ForkedChild:
    """``run()`` in a fork of this process with ``env`` as its environment, stdin a pipe from
    this process, stderr kept for :meth:`communicate`, stdout discarded."""

    def __init__(self, run: Callable[[], None], env: dict[str, str], args: list[str]):
        self.args = args  # what subprocess.TimeoutExpired names
        self.returncode: int | Any = None  # as subprocess.Popen's
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed by communicate)
        read_end, write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover  (the child: coverage does not follow forks)
            self._child(run, env, read_end, write_end)
        os.close(read_end)
        self.stdin = os.fdopen(write_end, "w")

    def _child(self, run: Callable[[], None], env: dict[str, str], read_end: int, write_end: int):
        code = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):  # not the parent's handlers
                signal.signal(sig, signal.SIG_DFL)
            os.close(write_end)
            os.dup2(read_end, 0)
            os.close(read_end)
            sys.stdin = open(0, closefd=False)  # noqa: SIM115  (multiprocessing's is devnull)
            os.dup2(self._stderr.fileno(), 2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
            os.environ.clear()
            os.environ.update(env)
            run()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Close stdin, wait for the end (subprocess.TimeoutExpired after ``timeout`` s);
        returns ("", its stderr)."""
        if not self.stdin.closed:
            with contextlib.suppress(OSError):  # it died: a broken pipe
                self.stdin.close()
        self._wait(timeout)
        with self._stderr:
            self._stderr.seek(0)
            return "", self._stderr.read().decode(errors="replace")

    def _wait(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # before Linux 5.3: a short poll
            pidfd = None
        try:
            while self.poll() is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout)  # type: ignore[arg-type]
                if pidfd is not None:
                    select.select([pidfd], [], [], left)
                else:
                    time.sleep(0.01 if left is None else min(0.01, left))
        finally:
            if pidfd is not None:
                os.close(pidfd)
