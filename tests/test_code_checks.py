"""The checks that keep the code as it is: ruff (lint and format) and mypy on the package,
run by the README's test command (configured in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "otreg", "tests", "benchmarks"),
        ("ruff", "format", "--check", "otreg", "tests", "benchmarks"),
    ],
    ids=["lint", "format"],
)
def test_ruff(command):
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    result = _run(*command)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy():
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
