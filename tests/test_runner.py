"""otreg.run(), the library call behind ``otreg register``: the same outputs, bit for bit."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SAMPLE, SOURCE, TARGET

import otreg
from otreg.errors import ConfigError, InputError, OutputError

REPO = Path(__file__).resolve().parents[1]
# a quick registration of the sample pair: every step runs, on small clouds
QUICK = [
    "input.points=1000",
    "rigid.points=400",
    "rigid.iterations=5",
    "rigid.principal_axes=false",
    "output.grid_spacing=16",
]


def _in_one_thread(args: list[str]) -> None:
    """Run a Python process as otreg's tests do: one thread, so float sums keep their order."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr


def _cut(text: str, start: str, end: str) -> str:
    """``text`` without the part from ``start`` up to (not including) ``end``."""
    head, _, rest = text.partition(start)
    assert rest, start
    return head + end + rest.partition(end)[2]


def _itk_transform_parameters(path: Path) -> list:
    """(type, fixed parameters, parameters) of each transform of an ITK composite file."""
    import SimpleITK as sitk

    composite = sitk.CompositeTransform(sitk.ReadTransform(str(path)))
    parts = [composite.GetNthTransform(i) for i in range(composite.GetNumberOfTransforms())]
    return [(t.GetName(), t.GetFixedParameters(), t.GetParameters()) for t in parts]


def _contents(out: Path) -> dict[str, object]:
    """Every output file's content, without what differs between two runs by design: the
    times, run.json's date and command line, and the date stamps inside zip, gzip and HDF5
    files."""
    contents: dict[str, object] = {}
    for path in sorted(out.iterdir()):
        if path.name == "run.json":
            run = json.loads(path.read_text())
            contents[path.name] = {k: v for k, v in run.items() if k not in ("created", "argv")}
        elif path.name == "metrics.json":
            metrics = json.loads(path.read_text())
            metrics.pop("times")
            for r in metrics["rounds"]:
                r.pop("time_s")
                r.pop("times")
            contents[path.name] = metrics
        elif path.name == "report.html":
            # without its times, date and command line: the step tables, the provenance and
            # footer, the subtitle (date) and the time card; the pictures, plots and numbers stay
            page = path.read_text()
            page = _cut(page, "<h2 id=steps>", "<h2 id=config>")
            page = _cut(page, "<h2 id=provenance>", "</html>")
            contents[path.name] = [
                line
                for line in page.splitlines()
                if not line.startswith('<p class="sub">')
                and '<div class="k">time</div>' not in line
            ]
        elif path.suffix == ".npz":
            with np.load(path) as data:
                contents[path.name] = {k: data[k].tobytes() for k in data.files}
        elif path.name.endswith(".gz"):
            contents[path.name] = gzip.decompress(path.read_bytes())
        elif path.suffix == ".h5":  # HDF5 object headers carry their write times
            contents[path.name] = _itk_transform_parameters(path)
        else:
            contents[path.name] = path.read_bytes()
    return contents


def test_the_command_and_the_library_write_the_same_outputs(tmp_path):
    sets = [arg for item in QUICK for arg in ("--set", item)]
    _in_one_thread(
        ["-m", "otreg", "register", str(SOURCE), str(TARGET), "-o", str(tmp_path / "cli"), *sets]
    )
    _in_one_thread(
        [
            "-c",
            f"import otreg; otreg.run({str(SOURCE)!r}, {str(TARGET)!r}, "
            f"{str(tmp_path / 'lib')!r}, overrides={QUICK!r})",
        ]
    )
    cli, lib = _contents(tmp_path / "cli"), _contents(tmp_path / "lib")
    assert set(cli) == set(lib) and "transform.npz" in cli
    for name in cli:
        assert cli[name] == lib[name], name
    run = json.loads((tmp_path / "lib" / "run.json").read_text())
    assert run["preset"] == {
        "name": "lung_vessels",
        "chosen_by": "input type: vessel clouds with a 'radius' array",
    }


def test_run_takes_a_preset_a_config_or_settings(tmp_path):
    config = otreg.load_config("lung_points", QUICK, device="cpu")
    done = otreg.run(
        SOURCE, TARGET, tmp_path / "out", config, match__blur=[4.0], smooth__sigma=[12.0]
    )
    assert done.preset == {"name": "a Config object", "chosen_by": "-c"}
    assert done.config.match.blur == [4.0] and done.config.input.points == 1000
    assert {r["blur_mm"] for r in done.registration.metrics["rounds"]} == {
        4.0
    }  # the preset's 6 rounds
    assert done.summary()["residual_after_mm"] < done.summary()["residual_before_mm"]
    assert (tmp_path / "out" / "transform.npz").is_file()


@pytest.mark.parametrize(
    "problem, error",
    [
        ({"overrides": ["input.points=3"]}, ConfigError),
        ({"overrides": ["match.nope=1"]}, ConfigError),
        ({"source": SAMPLE / "missing.vtk"}, InputError),
        ({"out_exists": True}, OutputError),
    ],
)
def test_run_refuses_bad_arguments_before_any_work(tmp_path, problem, error):
    out = tmp_path / "out"
    if problem.get("out_exists"):
        out.mkdir()
        (out / "mine.txt").write_text("not otreg's")
    with pytest.raises(error):
        otreg.run(
            problem.get("source", SOURCE), TARGET, out, overrides=problem.get("overrides", ())
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        ["out"] if problem.get("out_exists") else []
    )
