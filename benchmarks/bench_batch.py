"""otreg batch throughput: threads that fit the allocation, local workers, Slurm overhead.

Prints one table (a benchmark, not a test; run it on an otherwise idle machine):

1. two copd1 registrations at once, one core each (``otreg batch run --jobs 2``), against one
   alone on one core: the issue's bar is at most 1.2x; and, for reference, the same two as
   plain processes with every library's default threads (what oversubscribes the cores).
2. ``--jobs 1`` against ``--jobs 2`` over 8 DIR-LAB 4DCT point-cloud cases: cases per hour and
   the speed-up (bar: at least 1.7x on 2 cores).
3. Slurm overhead of an array (with ``--slurm``, on the one-node cluster of
   tests/setup/slurm.sh, as root): submit to the first case started, the last case done to the
   array gone from squeue.

    python benchmarks/bench_batch.py [--data ../shared/data] [--slurm] [--baseline]
    python benchmarks/bench_batch.py --quick     # the sample pair, tiny settings: checks it runs
    python benchmarks/bench_batch.py --compare HEAD~1   # the DIR-LAB batch, that commit and this tree
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from old_tree import checked_out

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "sample_data"
QUICK = [
    "input.points=400",
    "rigid.points=200",
    "rigid.iterations=5",
    "rigid.principal_axes=false",
    "output.grid_spacing=16",
    "match.blur=[8.0]",
    "match.reach=[20.0]",
    "smooth.sigma=[20.0]",
    "smooth.regression=['gaussian']",
]


def write_pipeline(
    folder: Path,
    rows: list[tuple[str, Path, Path]],
    overrides: list[str],
    config: str = "lung_vessels",
    cpus_per_task: int = 1,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["case,source,target"] + [f"{c},{s},{t}" for c, s, t in rows]
    (folder / "cases.csv").write_text("\n".join(lines) + "\n")
    path = folder / "pipeline.toml"
    path.write_text(
        f'manifest = "cases.csv"\noutput = "out"\n[registration]\nconfig = "{config}"\n'
        f"set = {json.dumps(overrides)}\n[slurm]\ncpus_per_task = {cpus_per_task}\n"
    )
    return path


def timed_batch(pipeline: Path, *args: str, root: Path = ROOT) -> float:
    """Wall time of one ``otreg batch run`` (of the tree ``root``) from a clean output folder."""
    shutil.rmtree(pipeline.parent / "out", ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "otreg", "batch", "run", str(pipeline), *args],
        capture_output=True,
        text=True,
        env=_env(root),
        cwd=pipeline.parent,  # not the repository: python -m would import otreg from there
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"otreg batch run {pipeline} {' '.join(args)} failed:\n{done.stderr}")
    return seconds


def _env(root: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OTREG_THREADS"):
        env.pop(name, None)  # the batch runner chooses them
    return env


def case_seconds(pipeline: Path) -> list[float]:
    out = pipeline.parent / "out"
    return [json.loads(p.read_text())["seconds"] for p in sorted(out.glob("*/status.json"))]


def plain_pair(source: Path, target: Path, overrides: list[str], folder: Path) -> float:
    """Two ``otreg register`` at once with the libraries' default threads (the reference)."""
    started = time.perf_counter()
    processes = []
    for k in range(2):
        command = [
            sys.executable,
            "-m",
            "otreg",
            "register",
            str(source),
            str(target),
            "-o",
            str(folder / f"plain{k}"),
            "--overwrite",
            "-c",
            "lung_vessels",
        ]
        for item in overrides:
            command += ["--set", item]
        processes.append(
            subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        )
    for process in processes:
        _, err = process.communicate()
        if process.returncode:
            sys.exit(err.decode())
    return time.perf_counter() - started


def compare(commit: str, batch: Path, name: str, cases: int, repeats: int) -> None:
    """``--jobs 1`` and ``--jobs 2`` over ``batch`` with ``commit``'s tree and this one,
    alternately (the first of each pair swapped every repeat), a row per run."""
    with checked_out(commit) as old:
        print(
            f"\n{name}: `otreg batch run`, {commit} (old) against this tree (new), "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print("| jobs | run | old s | new s | old / new | new cases/h |\n|---|---|---|---|---|---|")
        for jobs in ("1", "2"):
            for k in range(repeats):
                trees = [("old", old), ("new", ROOT)]
                seconds = dict(
                    (label, timed_batch(batch, "--jobs", jobs, root=root))
                    for label, root in (trees if k % 2 == 0 else trees[::-1])
                )
                print(
                    f"| {jobs} | {k + 1} | {seconds['old']:.1f} | {seconds['new']:.1f} | "
                    f"{seconds['old'] / seconds['new']:.2f}x | "
                    f"{3600 * cases / seconds['new']:.0f} |",
                    flush=True,
                )


def slurm_overhead(pipeline: Path) -> dict[str, float]:
    """Submit the pipeline as an array; times from the statuses and squeue (no sacct)."""
    setup = subprocess.run(
        ["bash", str(ROOT / "tests" / "setup" / "slurm.sh")], capture_output=True, text=True
    )
    if setup.returncode:
        sys.exit(f"tests/setup/slurm.sh: {setup.stderr.strip()}")
    env = {**_env(), "SLURM_CONF": setup.stdout.strip().splitlines()[-1].split("=", 1)[1]}
    shutil.rmtree(pipeline.parent / "out", ignore_errors=True)
    submitted = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "otreg", "batch", "slurm", str(pipeline), "--submit"],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode:
        sys.exit(done.stderr)
    job = done.stdout.strip()
    while subprocess.run(
        ["squeue", "-h", "-j", job], capture_output=True, text=True, env=env
    ).stdout.strip():
        time.sleep(0.1)
    gone = time.time()
    statuses = [json.loads(p.read_text()) for p in (pipeline.parent / "out").glob("*/status.json")]
    if not statuses or any(s["state"] != "ok" for s in statuses):
        sys.exit(f"the array {job} did not finish every case: see {pipeline.parent / 'out'}")
    return {
        "tasks": len(statuses),
        "submit_to_first_case_s": min(s["started"] for s in statuses) - submitted,
        "last_case_to_array_done_s": gone - max(s["finished"] for s in statuses),
        "array_wall_s": gone - submitted,
    }


class Rows:
    """The table's rows, each printed as soon as it is measured."""

    def append(self, row: tuple[str, str, str]) -> None:
        print("| " + " | ".join(row) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cases", type=int, default=8, help="cases of the --jobs comparison")
    parser.add_argument("--quick", action="store_true", help="the sample pair, tiny settings")
    parser.add_argument("--slurm", action="store_true", help="also the Slurm overhead (root)")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also two plain registrations at once, default threads",
    )
    parser.add_argument(
        "--compare",
        metavar="COMMIT",
        help="only the many-cases batch, with COMMIT's tree and this one alternately",
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs per side with --compare")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_batch-"))
    if args.quick:
        pair = (SAMPLE / "exhale_vessels.vtk", SAMPLE / "inhale_vessels.vtk")
        pair_name, overrides, config = "sample (tiny)", QUICK, "lung_vessels"
        many = [(f"c{k}", *pair) for k in range(args.cases)]
        many_overrides, many_name = QUICK, f"sample x {args.cases} (tiny)"
    else:
        copd = args.data / "copd1_vessels"
        pair = (copd / "copd1_exhale_vessels.vtk", copd / "copd1_inhale_vessels.vtk")
        pair_name, overrides, config = "copd1 (lung_vessels)", [], "lung_vessels"
        dirlab = args.data / "dirlab4dct"
        many = [
            (
                f"case{1 + k % 5}_{k}",
                dirlab / f"case{1 + k % 5}_exhale_points.vtk",
                dirlab / f"case{1 + k % 5}_inhale_points.vtk",
            )
            for k in range(args.cases)
        ]
        many_overrides, many_name = [], f"DIR-LAB 1-5 x {args.cases} cases (lung_points)"
        for _, s, t in [("", *pair), *many]:
            if not s.is_file() or not t.is_file():
                sys.exit(f"{s if not s.is_file() else t}: not found (--data, or --quick)")
    print(f"cpus: {len(os.sched_getaffinity(0))}, otreg batch, {time.strftime('%Y-%m-%d %H:%M')}")
    many_config = "lung_vessels" if args.quick else "lung_points"
    if args.compare:
        batch = write_pipeline(work / "many", many, many_overrides, many_config)
        compare(args.compare, batch, many_name, len(many), args.repeats)
        shutil.rmtree(work, ignore_errors=True)
        return
    print("| measurement | wall | |\n|---|---|---|", flush=True)
    rows = Rows()
    one = write_pipeline(work / "one", [("a", *pair)], overrides, config)
    alone = timed_batch(one, "--jobs", "1", "--threads", "1")
    rows.append(
        (
            f"{pair_name}: 1 case alone, 1 thread",
            f"{alone:.1f} s",
            f"case {case_seconds(one)[0]:.1f} s",
        )
    )
    two = write_pipeline(work / "two", [("a", *pair), ("b", *pair)], overrides, config)
    together = timed_batch(two, "--jobs", "2", "--threads", "1")
    slowest = max(case_seconds(two))
    rows.append(
        (
            f"{pair_name}: 2 cases at once, 1 thread each",
            f"{together:.1f} s",
            f"slowest case {slowest:.1f} s = {slowest / case_seconds(one)[0]:.2f}x alone "
            "(bar <= 1.2x)",
        )
    )
    if args.baseline:
        plain = plain_pair(*pair, overrides, work)
        rows.append(
            (
                f"{pair_name}: 2 plain `otreg register` at once, default threads",
                f"{plain:.1f} s",
                f"{plain / alone:.2f}x one alone",
            )
        )
    batch = write_pipeline(work / "many", many, many_overrides, many_config)
    jobs1 = timed_batch(batch, "--jobs", "1")
    jobs2 = timed_batch(batch, "--jobs", "2")
    n = len(many)
    rows.append((f"{many_name}: --jobs 1", f"{jobs1:.1f} s", f"{3600 * n / jobs1:.0f} cases/h"))
    rows.append(
        (
            f"{many_name}: --jobs 2",
            f"{jobs2:.1f} s",
            f"{3600 * n / jobs2:.0f} cases/h, {jobs1 / jobs2:.2f}x --jobs 1 (bar >= 1.7x)",
        )
    )
    if args.slurm:
        small = write_pipeline(work / "slurm", many[:4], QUICK, many_config)
        overhead = slurm_overhead(small)
        rows.append(
            (
                f"Slurm array, {overhead['tasks']} tiny tasks, 1 CPU each",
                f"{overhead['array_wall_s']:.1f} s",
                f"submit -> first case {overhead['submit_to_first_case_s']:.1f} s; last case "
                f"-> array done {overhead['last_case_to_array_done_s']:.1f} s",
            )
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
