"""Batch workers forked from a server that has imported the registration's libraries once.

A worker started as ``python -m otreg.batch.worker`` spends its first 1.3 s of a core importing
torch, VTK, nibabel and otreg, again for every case of a cohort. Where the platform has a
forkserver (Linux, macOS), the pool forks its workers instead from one server process
(multiprocessing's forkserver, which imports :data:`PRELOAD` and runs nothing, so that no
thread and no OpenMP pool exists when it forks). Each case still runs in a process of its own:
its own session, log file, CPUs and threads (the worker sets them as when started fresh), and
a crash or a leak ends with it.

The server is one per process (multiprocessing's), started once with the environment of the
first caller; :func:`server_environment` says which, so that a caller that needs another one
(the tests' forked commands) can tell.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

# what a worker imports before its case runs (python -X importtime -m otreg.batch.worker)
PRELOAD = [
    "otreg.batch.server_signals",  # first: the server outlives a job's SIGTERM
    "numpy",
    "torch",
    "pyvista",
    "nibabel",
    "otreg.cli",
    "otreg.batch.worker",
    "otreg.runner",
    "otreg.pipeline",
    "otreg.io",
    "otreg.evaluation",
    "otreg.report.outputs",
    "otreg.report.raster",
    "PIL.Image",
]

log = logging.getLogger(__name__)

_server_env: dict[str, str] | None = None


def server_environment() -> dict[str, str] | None:
    """The environment the server was started with by :func:`fork_context` (None: not yet)."""
    return _server_env


@contextmanager
def _environment(env: dict[str, str]):
    """os.environ replaced by ``env`` for the duration (the server inherits it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def fork_context(
    env: dict[str, str], preload: list[str] = PRELOAD
) -> multiprocessing.context.ForkServerContext | None:
    """The forkserver context, its server started with ``env`` and ``preload`` if it does not
    run yet (None where the platform has no forkserver)."""
    global _server_env
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    if _server_env is None:
        from multiprocessing import forkserver

        context.set_forkserver_preload(preload)
        with _environment(env):
            forkserver.ensure_running()
        _server_env = dict(env)
    return context


# multiprocessing reads a forked process's exit code from a pipe, once: the pool's waiting
# threads and Process.start (which polls every earlier child) must not read it at once
_exit_codes = threading.Lock()


class ForkedWorker:
    """A worker forked from the server, with what the pool uses of a subprocess.Popen."""

    def __init__(self, process: multiprocessing.process.BaseProcess):
        self.process = process

    def wait(self) -> int:
        """Its exit code (-N when killed by signal N), once it has ended (any thread)."""
        from multiprocessing.connection import wait

        wait([self.process.sentinel])
        with _exit_codes:
            return self.process.exitcode  # type: ignore[return-value]

    def send_signal(self, signum: int) -> None:
        if self.process.pid is not None:
            os.kill(self.process.pid, signum)


def start_worker(argv: list[str], log_path: Path, env: dict[str, str]) -> ForkedWorker | None:
    """``python -m otreg.batch.worker ARGV`` as a fork of the server (started with ``env`` if
    it does not run yet), stdout and stderr appended to ``log_path``; None where the platform
    has no forkserver, or the server could not fork it (the caller starts a new interpreter)."""
    try:
        context = fork_context(env)  # its socket lives in the temporary folder: may fail
        if context is None:
            return None
        process = context.Process(target=_worker, args=(argv, str(log_path)), name="otreg-worker")
        with _exit_codes:
            process.start()
    except (OSError, EOFError) as err:
        log.warning("the batch's fork server could not start a worker (%s): a new interpreter", err)
        return None
    return ForkedWorker(process)


def _worker(argv: list[str], log_path: str) -> None:
    """In the fork: a session of its own (a ^C on the terminal reaches the runner, which
    passes it on), the default handlers of the signals the server ignores, the log file as
    stdout and stderr, then the worker's main."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    os.setsid()
    try:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:  # a full disk: the case's status will say what went wrong
        log_fd = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(log_fd, fd)
    os.close(log_fd)
    from .worker import main

    sys.exit(main(argv))
