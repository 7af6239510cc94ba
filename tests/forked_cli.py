"""``python -m otreg ARGS`` without paying the interpreter's start and otreg's imports each time.

Most of the suite's command runs are a bad input refused in milliseconds, behind 1-2 s of
importing torch, VTK and nibabel. Here one server process per test process imports them once
(multiprocessing's forkserver, started with the environment of :func:`helpers.otreg_env`); each
run is a fresh fork of that server which runs ``otreg``'s ``__main__`` as ``python -m otreg``
would, its stdout and stderr on files, its exit status the process's own (SystemExit's code,
1 for an uncaught exception with its traceback on stderr, -N when killed by signal N). Every run
starts from the same state: the server imports and never runs anything, so nothing one run
caches or configures (logging, warnings, signal handlers) is seen by the next.

What a fork cannot show, the tests run in a new interpreter (``run_otreg(..., fresh=True)``,
``OTREG_TEST_FORK=0`` for all of them): what is imported at start (tests/test_cli.py's
import test), environment variables read at import time (``env=`` runs are always fresh), and
signals (tests/test_hostile_output.py, test_cli.py).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from otreg.batch import forking

# imported once by the server: what the commands import (see python -X importtime -m otreg)
PRELOAD = [
    "numpy",
    "torch",
    "pyvista",
    "nibabel",
    "SimpleITK",
    "otreg.cli",
    "otreg.runner",
    "otreg.pipeline",
    "otreg.io",
    "otreg.evaluation",
    "otreg.warping",
]


def available(env: dict[str, str]) -> bool:
    """Whether a run with environment ``env`` can be a fork: not with ``OTREG_TEST_FORK=0``, nor
    where there is no forkserver, nor once the server runs with another environment (the
    server is the process's one, :mod:`otreg.batch.forking`: a batch run in this process may
    have started it)."""
    started = forking.server_environment()
    return (
        os.environ.get("OTREG_TEST_FORK", "1") != "0"
        and "forkserver" in multiprocessing.get_all_start_methods()
        and (started is None or _comparable(started) == _comparable(env))
    )


def start(env: dict[str, str]) -> None:
    """The server started now, with ``env``, where runs can be forks (before a batch run in
    this process starts it with the batch's environment)."""
    if available(env):
        forking.fork_context(env, PRELOAD)


def _comparable(env: dict[str, str]) -> dict[str, str]:
    """``env`` without what pytest changes from test to test."""
    return {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}


def _child(args: list[str], cwd: str, stdout: str, stderr: str) -> None:
    """In the fork: ``python -m otreg ARGS`` in ``cwd``, stdout and stderr on the two files."""
    import runpy

    os.chdir(cwd)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = [sys.executable, *args]
    runpy.run_module("otreg", run_name="__main__", alter_sys=True)


def run(
    args: list[str], cwd: str | Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """``python -m otreg ARGS`` in a fork of the server (``env``: the server's environment)."""
    context = forking.fork_context(env, PRELOAD)
    assert context is not None
    with contextlib.ExitStack() as stack:
        paths = []
        for name in ("stdout", "stderr"):
            fd, path = tempfile.mkstemp(prefix=f"otreg-test-{name}-")
            os.close(fd)
            stack.callback(os.unlink, path)
            paths.append(path)
        process = context.Process(target=_child, args=(args, str(cwd), *paths))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([sys.executable, "-m", "otreg", *args], timeout)
        stdout, stderr = (Path(p).read_text(errors="replace") for p in paths)
    return subprocess.CompletedProcess(
        [sys.executable, "-m", "otreg", *args], process.exitcode, stdout, stderr
    )
