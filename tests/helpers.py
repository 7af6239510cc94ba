"""What the tests share: the one way they run the real command (``run_otreg``, also the
``run_otreg`` fixture of conftest.py), quick settings, and the check of a one-line error."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import forked_cli
import numpy as np

REPO = Path(__file__).resolve().parents[1]
# the sample pair (sample_data/make_sample_data.py): source = exhale, target = inhale
SAMPLE = REPO / "sample_data"
SOURCE, TARGET = SAMPLE / "exhale_vessels.vtk", SAMPLE / "inhale_vessels.vtk"
SOURCE_LANDMARKS, TARGET_LANDMARKS = (
    SAMPLE / "exhale_landmarks.txt",
    SAMPLE / "inhale_landmarks.txt",
)

# Settings that make a registration of a few hundred points take seconds (should a bad input
# ever get through to one). report.html is still written, without its pictures (drawing them
# takes longer than the registration; tests/test_report.py checks them).
FAST = [
    "--points",
    "300",
    "--set",
    "rigid.points=300",
    "--set",
    "rigid.iterations=5",
    "--set",
    "rigid.principal_axes=false",
    "--set",
    "output.grid_spacing=16",
    "--set",
    "solver.max_iter=50",
    "--set",
    "output.report_pictures=false",
]


def otreg_env(**extra: str) -> dict[str, str]:
    """One thread per process (tests run beside each other on shared CPUs, and one thread keeps
    float sums in order); this tree first on the path; ``extra`` added."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "COLUMNS": "200",
        "PYTHONPATH": path,
        **extra,
    }


def run_otreg(
    *args: str | Path,
    cwd: str | Path | None = None,
    check: bool = False,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    fresh: bool = False,
    **kwargs,
) -> subprocess.CompletedProcess:
    """``python -m otreg ARGS`` in a child process (what maps errors onto exit codes), in
    ``cwd`` (default: the repository); ``check``: assert that it exits 0; ``env`` adds to the
    environment; ``kwargs`` go to subprocess.run (e.g. ``input``). The child is a fork of a
    server that has imported otreg and its libraries once (tests/forked_cli.py); ``fresh``,
    ``env``, ``kwargs`` or ``OTREG_TEST_FORK=0``: a new interpreter."""
    environment = otreg_env(**(env or {}))
    if not (fresh or env or kwargs) and forked_cli.available(environment):
        result = forked_cli.run(list(map(str, args)), cwd or REPO, environment, timeout)
    else:
        result = subprocess.run(
            [sys.executable, "-m", "otreg", *map(str, args)],
            cwd=cwd or REPO,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
    if check:
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
    return result


def random_points(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, size=(n, 3))


def write_txt(path: Path, points: np.ndarray) -> Path:
    np.savetxt(path, points, fmt="%.6f")
    return path


def assert_one_error(result: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """The exit code, no traceback, one 'otreg: error:' line holding every needle (any case)."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("otreg: error:")]
    assert len(errors) == 1 and len(lines) == 1, result.stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too) with its bytes (None for folders)."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def run_python(script: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c SCRIPT`` with the same environment (for runs that patch otreg first)."""
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=otreg_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Held by one test process of this machine at a time (an flock on a file in the temporary
    folder): the set-up scripts (apt-get, the one-node Slurm) and first compilations must not
    run twice at once when the suite runs in several workers (pytest -n)."""
    import fcntl

    path = Path(tempfile.gettempdir()) / f"otreg-tests-{name}.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
