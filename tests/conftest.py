"""Shared test fixtures.

``shared_data``: the folder of real patient data, ``../shared/data`` next to the repository
(never copied into it). Tests that use it are skipped, with the reason, when it is absent.
``run_otreg``: the command itself, in a child process (the one CLI helper of the tests; a fork
of a server that has imported otreg once, tests/forked_cli.py, unless ``fresh=True``).
``fast_settings``: command-line options that make a sample-pair registration quick.

Torch runs on a fixed number of threads in the test process (``OTREG_TEST_THREADS``, default
2, or 1 in each worker of ``pytest -n``), whatever the machine, so that float sums keep one
order from run to run.

Under ``pytest -n N --dist loadgroup`` (the README's test command), the tests that share
module-scoped fixtures of their file (one registration asserted on by several tests) run in
one worker, so that it runs once; the others spread over the workers one by one. The Slurm
tests (one node) and those marked ``xdist_group`` (the first KeOps compilation) keep to one
worker too.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import helpers
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
IN_A_WORKER = "PYTEST_XDIST_WORKER" in os.environ  # pytest -n: workers share the cores
TEST_THREADS = int(os.environ.get("OTREG_TEST_THREADS", "1" if IN_A_WORKER else "2"))


def pytest_configure(config):
    """Under pytest -n: numpy's BLAS on one thread in each worker too. It sizes its thread pool
    when numpy is imported, which the workers do after they start: so it is set here, in the
    process that starts them (two workers' two BLAS threads each on two cores took a quarter
    more CPU time, spinning while they waited)."""
    if not IN_A_WORKER and getattr(config.option, "numprocesses", None):
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest -n: the tests of a file that share module-scoped fixtures of that file
    (directly or through another test) go to one worker (xdist_group), which makes each
    fixture once; the Slurm tests go to one worker."""
    shared: dict[pytest.Item, set[str]] = {}
    for item in items:
        if item.get_closest_marker("slurm"):  # one Slurm node: its tests one after the other
            item.add_marker(pytest.mark.xdist_group("slurm"))
        if item.get_closest_marker("xdist_group"):
            continue
        module = item.nodeid.split("::")[0]
        info = getattr(item, "_fixtureinfo", None)
        names = {
            f"{module}:{name}"
            for name, definitions in (info.name2fixturedefs.items() if info else ())
            if any(d.scope == "module" and d.baseid == module for d in definitions)
        }
        if names:
            shared[item] = names
    group: dict[str, str] = {}  # fixture -> its group's name (union of overlapping sets)
    for names in shared.values():
        merged = set(names)
        for name in names:
            if name in group:
                merged |= {n for n, g in group.items() if g == group[name]}
        label = min(merged)
        group.update(dict.fromkeys(merged, label))
    for item, names in shared.items():
        item.add_marker(pytest.mark.xdist_group(group[next(iter(names))]))


@pytest.fixture(scope="session", autouse=True)
def _pinned_torch_threads():
    import torch

    torch.set_num_threads(TEST_THREADS)


@pytest.fixture(scope="session", autouse=True)
def _command_server():
    """The forked commands' server (tests/forked_cli.py), started before any test: the process
    has one, and a batch run in this process would otherwise start it with its own
    environment (otreg.batch.forking), the commands then running fresh."""
    import forked_cli

    forked_cli.start(helpers.otreg_env())


@pytest.fixture(scope="session")
def run_otreg():
    """``helpers.run_otreg`` checking the exit code by default: ``run_otreg(*args, cwd=None,
    check=True, timeout=600, env=None, fresh=False)`` -> CompletedProcess of
    ``python -m otreg ARGS``."""
    return functools.partial(helpers.run_otreg, check=True)


@pytest.fixture(scope="session")
def fast_settings() -> list[str]:
    """Fast but meaningful on the sample pair (TRE ~13.9 mm -> ~2 mm); principal_axes off:
    the sample pair has no large rotation; the report without its pictures (test_report.py)."""
    return [
        "--points",
        "1500",
        "--set",
        "rigid.points=500",
        "--set",
        "rigid.iterations=10",
        "--set",
        "rigid.principal_axes=false",
        "--set",
        "solver.max_iter=100",
        "--set",
        "output.grid_spacing=16",
        "--set",
        "output.report_pictures=false",
    ]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test when that folder does not exist."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found: {SHARED_DATA} (real-data tests need it)")
    return SHARED_DATA


# A quick registration of the sample pair (one round on 400 points, about 1-2 s after the
# imports; report.html without pictures): what the batch tests run in each case.
QUICK_BATCH_SETTINGS = [
    "input.points=400",
    "rigid.points=200",
    "rigid.iterations=5",
    "rigid.principal_axes=false",
    "output.grid_spacing=16",
    "match.blur=[8.0]",
    "match.reach=[20.0]",
    "smooth.sigma=[20.0]",
    "smooth.regression=['gaussian']",
    "output.report_pictures=false",  # the page is written; its pictures: tests/test_report.py
]
SAMPLE = REPO / "sample_data"


@pytest.fixture
def batch_study():
    """A function writing a batch pipeline + manifest of quick cases of the sample pair:
    ``batch_study(folder, case_ids, landmarks=True, extra="")`` -> the pipeline file. Cases
    alternate forward (exhale -> inhale) and backward, case k with seed k; OUT is folder/out."""

    def write(
        folder: Path, case_ids: list[str], *, landmarks: bool = True, extra: str = ""
    ) -> Path:
        import json

        folder.mkdir(parents=True, exist_ok=True)
        header = "case,source,target,source_landmarks,target_landmarks,seed"
        rows = [header if landmarks else "case,source,target,seed"]
        for k, case in enumerate(case_ids):
            a, b = ("exhale", "inhale") if k % 2 == 0 else ("inhale", "exhale")
            files = [SAMPLE / f"{a}_vessels.vtk", SAMPLE / f"{b}_vessels.vtk"]
            if landmarks:
                files += [SAMPLE / f"{a}_landmarks.txt", SAMPLE / f"{b}_landmarks.txt"]
            rows.append(",".join([case, *map(str, files), str(k)]))
        (folder / "cases.csv").write_text("\n".join(rows) + "\n")
        overrides = ", ".join(json.dumps(o) for o in QUICK_BATCH_SETTINGS)
        path = folder / "pipeline.toml"
        path.write_text(
            'manifest = "cases.csv"\noutput = "out"\n[registration]\nconfig = "lung_vessels"\n'
            f"set = [{overrides}]\n{extra}\n"
        )
        return path

    return write
