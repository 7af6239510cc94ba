"""Fuzzing the readers: random bytes written over the start (the header) of a valid file of
each format, loaded with ``otreg.load``. Allowed outcomes: a cloud, or an OtregError. Not
allowed: any other exception, a crash (VTK segfaults or aborts kill the process), a hang.

Each format runs in a child process (a crash must not take pytest down) under a memory limit
(``resource.setrlimit``), with hypothesis choosing the bytes. The file that crashes the child is
kept and named in the failure. ``OTREG_FUZZ_EXAMPLES`` sets the examples per format (default
60: the suite stays quick; run it with a few thousand locally).
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import run_python

pytest.importorskip("hypothesis")
pv = pytest.importorskip("pyvista")
nib = pytest.importorskip("nibabel")

EXAMPLES = int(os.environ.get("OTREG_FUZZ_EXAMPLES", "60"))
MEMORY_LIMIT = 4 * 1024**3


def _seed_files(folder: Path) -> dict[str, Path]:
    """A small valid file of each format."""
    rng = np.random.default_rng(0)
    sphere = pv.Sphere(theta_resolution=8, phi_resolution=8)
    sphere["radius"] = rng.uniform(1, 2, sphere.n_points)
    files = {
        "ply_ascii": folder / "seed_ascii.ply",
        "ply_binary": folder / "seed_binary.ply",
        "vtk_ascii": folder / "seed_ascii.vtk",
        "vtk_binary": folder / "seed_binary.vtk",
        "stl_binary": folder / "seed.stl",
        "obj": folder / "seed.obj",
        "vtp": folder / "seed.vtp",
        "txt": folder / "seed.txt",
        "npy": folder / "seed.npy",
        "nii": folder / "seed.nii",
    }
    sphere.save(files["ply_ascii"], binary=False)
    sphere.save(files["ply_binary"], binary=True)
    sphere.save(files["vtk_ascii"], binary=False)
    sphere.save(files["vtk_binary"], binary=True)
    sphere.extract_surface().save(files["stl_binary"], binary=True)
    sphere.save(files["vtp"], binary=False)
    faces = sphere.faces.reshape(-1, 4)[:, 1:] + 1
    files["obj"].write_text(
        "".join(f"v {x:.4f} {y:.4f} {z:.4f}\n" for x, y, z in sphere.points)
        + "".join(f"f {a} {b} {c}\n" for a, b, c in faces)
    )
    np.savetxt(files["txt"], rng.uniform(0, 100, (50, 3)))
    np.save(files["npy"], rng.uniform(0, 100, (50, 3)))
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[2:8, 3:7, 2:9] = 1
    nib.Nifti1Image(mask, np.diag([1.5, 1.5, 2.0, 1.0])).to_filename(files["nii"])
    return files


CHILD = textwrap.dedent(
    """
    import os, resource, sys, traceback
    from pathlib import Path
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from hypothesis import HealthCheck, given, settings, strategies as st
    import otreg
    from otreg.errors import OtregError

    seed = Path({seed!r})
    data = seed.read_bytes()
    work = Path({work!r}) / ("case" + "".join(seed.suffixes))
    head = min(len(data), 512)

    @settings(max_examples={examples}, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.integers(0, head - 1), st.binary(min_size=1, max_size=8)),
                    min_size=1, max_size=6),
           st.integers(0, len(data)))
    def fuzz(edits, cut):
        raw = bytearray(data)
        for at, chunk in edits:
            raw[at:at + len(chunk)] = chunk
        work.write_bytes(bytes(raw[: max(cut, head)]))
        try:
            otreg.load(work)
        except OtregError:
            pass

    fuzz()
    print("done")
    """
)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, Path]:
    return _seed_files(tmp_path_factory.mktemp("seeds"))


@pytest.mark.skipif(sys.platform == "win32", reason="resource limits")
@pytest.mark.parametrize(
    "fmt", ["ply_ascii", "ply_binary", "vtk_ascii", "vtk_binary", "stl_binary", "obj", "vtp",
            "txt", "npy", "nii"],
)  # fmt: skip
def test_random_header_bytes_never_crash_a_reader(fmt, seeds, tmp_path):
    import otreg

    otreg.load(seeds[fmt])  # the seed itself is valid
    script = CHILD.format(
        limit=MEMORY_LIMIT, seed=str(seeds[fmt]), work=str(tmp_path), examples=EXAMPLES
    )
    result = run_python(script, tmp_path, timeout=600)
    case = next(tmp_path.glob("case*"), None)
    assert result.returncode == 0 and "done" in result.stdout, (
        f"{fmt}: exit {result.returncode} on {case} (kept):\n{result.stderr[-3000:]}"
    )
