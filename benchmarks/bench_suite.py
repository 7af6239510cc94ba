"""Wall time of the test suite in a fresh clone: the README's test command against the suite
as it ran before it was made parallel (one process, every command run in a new interpreter).

    python benchmarks/bench_suite.py                 # both ways, with ../shared/data
    python benchmarks/bench_suite.py --no-data       # as a clone without the patient data
    python benchmarks/bench_suite.py --only readme   # the README's command alone

Each run gets a fresh clone of this repository's HEAD in a temporary folder (no .mypy_cache,
no __pycache__), with ../shared/data beside it unless --no-data, and the compiled kernels
copied from this tree (built with ``python setup.py build_ext --inplace`` where this tree has
none); otreg is imported from the clone (PYTHONPATH), the installed packages are used as they
are. Run it on an otherwise idle machine: the table's header says the load average.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
README_COMMAND = ["-m", "pytest", "-q", "-n", "auto"]
WAYS = {
    "readme": (README_COMMAND, {}),
    # before: one process, torch on 2 threads, a new interpreter for every command run
    "serial": (
        ["-m", "pytest", "-q", "-n", "0"],
        {"OTREG_TEST_FORK": "0", "OTREG_TEST_THREADS": "2"},
    ),
}


def fresh_clone(root: Path, data: bool) -> Path:
    clone = root / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    built = sorted((REPO / "otreg" / "native").glob("_kernels*.so"))
    if built:
        shutil.copy2(built[0], clone / "otreg" / "native")
    else:
        subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=clone, check=True
        )
    if data and DATA.is_dir():
        (root / "shared").mkdir()
        (root / "shared" / "data").symlink_to(DATA)
    return clone


def run(way: str, data: bool) -> tuple[float, str]:
    args, extra = WAYS[way]
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as folder:
        clone = fresh_clone(Path(folder), data)
        env = {**os.environ, "PYTHONPATH": str(clone), **extra}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, *args], cwd=clone, env=env, capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
    summary = [line for line in done.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    return seconds, (summary[-1] if summary else done.stdout[-500:] + done.stderr[-500:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-data", action="store_true", help="no ../shared/data beside the clone")
    parser.add_argument("--only", choices=sorted(WAYS), help="one way only")
    options = parser.parse_args()
    data = not options.no_data
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, data: {data}")
    print("| way | command | wall s | pytest's summary |")
    print("|---|---|---|---|")
    for way in [options.only] if options.only else list(WAYS):
        seconds, summary = run(way, data)
        args, extra = WAYS[way]
        command = " ".join(f"{k}={v}" for k, v in extra.items()) + " python " + " ".join(args)
        print(f"| {way} | `{command.strip()}` | {seconds:.0f} | {summary} |", flush=True)


if __name__ == "__main__":
    main()
