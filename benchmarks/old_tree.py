"""An older commit of this repository, checked out and built for a side-by-side benchmark.

with checked_out("df634f6") as tree:   # a temporary git worktree, its kernels built
    ... run tree's otreg (PYTHONPATH=tree, from a folder outside the repository) ...
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def checked_out(commit: str) -> Iterator[Path]:
    """``commit`` in a temporary worktree, with what its CLI needs built: the extension where
    the tree has one (setup.py build_ext), else the run-time ctypes kernels of older commits,
    compiled by one import. The worktree is removed on exit."""
    with tempfile.TemporaryDirectory(prefix="otreg-old-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit],
            check=True,
            capture_output=True,
        )
        try:
            build = None
            if (tree / "otreg" / "native" / "_kernels.cpp").exists():
                build = [sys.executable, "setup.py", "build_ext", "--inplace"]
            elif (tree / "otreg" / "ot" / "_native.py").exists():
                build = [sys.executable, "-c", "from otreg.ot import _native; _native.library()"]
            if build:
                env = {**os.environ, "PYTHONPATH": str(tree)}
                subprocess.run(build, cwd=tree, env=env, check=True, capture_output=True)
            yield tree
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                capture_output=True,
            )
