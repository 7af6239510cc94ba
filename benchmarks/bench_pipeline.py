"""Where a whole registration spends its time and memory, and how it compares with an older commit.

Prints tables (a benchmark, not a test). Three modes:

- default: the profile of ``otreg.run`` (the library call behind ``otreg register``, outputs
  and report included) per step: load, sampling, rigid, each non-rigid round split into OT /
  regression fit / svf velocity grid / field evaluation at the points, quality (Jacobian),
  outputs, report; the time and the peak resident memory of each step.
- ``--baseline COMMIT``: ``otreg register`` (the CLI, outputs included, a fresh Python process
  per run, so imports count) of COMMIT, checked out with ``git worktree`` into a temporary
  folder and built there, against the current tree, alternately in the same sitting: old s /
  new s / ratio per case (copd1 and a DIR-LAB case), with both runs' residuals.
- ``--growth``: the library registration of copd1 at ``input.points`` 10k, 20k, 40k and 0 (all
  60k points) and the exponent of time ~ N^a fitted over them.
- ``--large K``: the profile of copd1 made K times denser (jittered copies; K = 5: 300,000
  points per phase) registered with ``input.points = 0``: whether a 300k-point tree fits the
  memory, or the clear error otreg gives before it starts.

Peak memory per step: each case runs in its own process; at every step boundary the child
reads the kernel's resident-set high-water mark (VmHWM of /proc/self/status) and resets it
(``5`` into /proc/self/clear_refs, Linux >= 4.0). So a step's figure is the largest RSS of the
whole process while that step ran, torch's and the compiled kernels' allocations included, and
memory still held from earlier steps too (it is not the step's own increment). Where the reset
is refused, only the whole run's peak is printed.

    python benchmarks/bench_pipeline.py --threads 2 [--cases copd1 sample dirlab2] [--points N]
    python benchmarks/bench_pipeline.py --threads 2 --baseline df634f6 [--repeats 3]
    python benchmarks/bench_pipeline.py --threads 2 --growth
    python benchmarks/bench_pipeline.py --threads 2 --large 5    # a 300k-point tree, all points

Run on an otherwise idle machine: on a shared 2-core box a busy core makes 2-thread torch
runs several times slower (the header prints the load average).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from old_tree import checked_out

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DIRLAB = DATA / "dirlab4dct"
# name: (source (moving), target (fixed), preset, settings); DIR-LAB clouds carry no SPACE= tag,
# they are in the frame of their landmarks (RAS as read)
CASES = {
    "copd1": (
        DATA / "copd1_vessels" / "copd1_exhale_vessels.vtk",
        DATA / "copd1_vessels" / "copd1_inhale_vessels.vtk",
        "lung_vessels",
        [],
    ),
    "sample": (
        ROOT / "sample_data" / "exhale_vessels.vtk",
        ROOT / "sample_data" / "inhale_vessels.vtk",
        "lung_vessels",
        [],
    ),
    **{
        f"dirlab{n}": (
            DIRLAB / f"case{n}_exhale_points.vtk",
            DIRLAB / f"case{n}_inhale_points.vtk",
            "lung_points",
            ["input.mesh_frame=ras"],
        )
        for n in range(1, 6)
    },
}
GROWTH_POINTS = [10000, 20000, 40000, 0]

_CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path

def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

src, tgt, preset, settings, outputs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5] == "1"
import otreg, otreg.io
steps, current = [], ["start", time.perf_counter()]
resets = reset_hwm()

def on_step(text):
    now = time.perf_counter()
    steps.append({"step": current[0], "s": now - current[1], "peak_mb": hwm_mb()})
    print("STEP " + json.dumps(steps[-1]), flush=True)  # a run cut short still shows its steps
    reset_hwm()
    current[:] = [text, now]

started = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    if outputs:
        done = otreg.run(src, tgt, Path(tmp) / "out", preset, overrides=settings, on_step=on_step)
        registration = done.registration
        # the report's times are added to the file's metrics, not to the registration's
        registration.metrics["times"] = json.loads((done.out / "metrics.json").read_text())["times"]
    else:
        cfg = otreg.load_config(preset, settings)
        on_step("loading")
        s, t = otreg.load(src, **otreg.io.load_options(cfg.input)), otreg.load(tgt, **otreg.io.load_options(cfg.input))
        registration = otreg.register(s, t, cfg, on_step=on_step)
    on_step("end")
total = time.perf_counter() - started
m = registration.metrics
print(json.dumps({"steps": steps[1:], "hwm_reset": resets, "total_s": total, "times": m["times"], "rounds": m["rounds"],
    "points": m["points"], "residual_before": m["residual_before"]["mean_mm"],
    "residual_after": m["residual_after"]["mean_mm"], "device": m["device"]}))
"""


def _env(threads: int, pythonpath: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": str(pythonpath),
    }


def _settings(name: str, points: int | None, device: str | None) -> list[str]:
    settings = list(CASES[name][3])
    if points is not None:
        settings.append(f"input.points={points}")
    if device is not None:
        settings.append(f"device={device}")
    return settings


def profile_case(
    name: str, settings: list[str], threads: int, outputs: bool, *, progress: bool = False
) -> dict | None:
    """One run in a child process; its JSON record, or None (printed why) if it failed.
    ``progress``: print each step's time and peak as it ends (long runs)."""
    src, tgt, preset, _ = CASES[name]
    command = [sys.executable, "-c", _CHILD, str(src), str(tgt), preset, json.dumps(settings)]
    child = subprocess.Popen(
        [*command, "1" if outputs else "0"],
        env=_env(threads, ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = ""
    for line in child.stdout:  # type: ignore[union-attr]
        if line.startswith("STEP ") and progress:
            step = json.loads(line[5:])
            print(
                f"  ({name}: {step['step']}: {step['s']:.1f} s, peak {step['peak_mb']:.0f} MB)",
                flush=True,
            )
        elif line.strip():
            last = line
    stderr = child.stderr.read()  # type: ignore[union-attr]
    if child.wait():
        print(f"{name} failed:\n{stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(last)


def make_large_case(copies: int, folder: Path, jitter_mm: float = 0.5) -> None:
    """CASES["copd1xK"]: each copd1 phase ``copies`` times over, every copy but the first moved
    by Gaussian noise of ``jitter_mm`` per axis (a denser tree of the same lungs, radius kept),
    written to ``folder``."""
    import numpy as np
    import pyvista as pv

    rng = np.random.default_rng(0)
    paths = []
    for phase in (CASES["copd1"][0], CASES["copd1"][1]):
        mesh = pv.read(phase)
        points, radius = np.asarray(mesh.points), np.asarray(mesh.point_data["radius"])
        many = np.vstack(
            [points] + [points + rng.normal(0, jitter_mm, points.shape) for _ in range(copies - 1)]
        )
        cloud = pv.PolyData(many)
        cloud.point_data["radius"] = np.tile(radius, copies)
        path = folder / f"x{copies}_{phase.name}"
        cloud.save(path, binary=True)
        paths.append(path)
    CASES[f"copd1x{copies}"] = (paths[0], paths[1], "lung_vessels", [])


def _step_label(text: str) -> str:
    if text.startswith("OT matching, round"):
        return "round " + text.split("round ")[1].split("/")[0]
    return {
        "rigid alignment": "rigid",
        "Jacobian determinant": "quality",
        "writing outputs": "outputs + report",
    }.get(text, text)


def print_profile(name: str, r: dict) -> None:
    """One table per case: each step's seconds and peak RSS, the rounds split."""
    rounds = {k["round"]: k.get("times", {}) for k in r["rounds"]}
    report = r["times"].get("report_s")
    print(
        f"\n{name}: {r['points']['source']}/{r['points']['target']} points registered, "
        f"total {r['total_s']:.2f} s, residual {r['residual_before']:.2f} -> "
        f"{r['residual_after']:.2f} mm, device {r['device']}"
    )
    print("| step | s | OT s | fit s | svf s | field s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for step in r["steps"]:
        label = _step_label(step["step"])
        peak = f"{step['peak_mb']:.0f}" if r["hwm_reset"] else ""
        parts = ["", "", "", ""]
        if label.startswith("round "):
            t = rounds.get(int(label.split()[1]), {})
            parts = [f"{t[k]:.2f}" if k in t else "" for k in ("ot_s", "fit_s", "svf_s", "field_s")]
        if label == "outputs + report" and report is not None:
            print(f"| outputs | {step['s'] - report:.2f} | | | | | {peak} |")
            label, step = "report (within the step above's peak)", {**step, "s": report}
        print(f"| {label} | {step['s']:.2f} | {' | '.join(parts)} | {peak} |")
    if not r["hwm_reset"]:
        print("(peak RSS per step unavailable: /proc/self/clear_refs refused)")
    sys.stdout.flush()


# ---------------------------------------------------------------------- baseline
def _register_cli(tree: Path, name: str, threads: int, work: Path) -> tuple[float, dict]:
    """Wall-clock s of ``python -m otreg register`` from ``tree`` (outputs written), and its
    metrics.json."""
    src, tgt, preset, settings = CASES[name]
    knows = (tree / "otreg" / "config.py").read_text()
    # settings the older commit has no key for are left out (mesh_frame: DIR-LAB clouds were
    # read as RAS before the key existed)
    settings = [s for s in settings if s.split("=")[0].split(".")[-1] in knows]
    out = work / f"out-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "otreg", "register", str(src), str(tgt), "-o", str(out)]
    command += ["-c", preset] + [a for s in settings for a in ("--set", s)]
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=work, env=_env(threads, tree), capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{tree}: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    shutil.rmtree(out)
    return seconds, metrics


def baseline(commit: str, cases: list[str], threads: int, repeats: int) -> None:
    """Old commit against this tree, alternately, one row per run and a median row per case."""
    with (
        tempfile.TemporaryDirectory(prefix="otreg-baseline-") as tmp,
        checked_out(commit) as old_tree,
    ):
        work = Path(tmp) / "work"
        work.mkdir()
        print(
            f"otreg register, {commit} (old) against this tree (new), {threads} thread(s), "
            f"outputs included, alternately; load average {os.getloadavg()[0]:.1f}"
        )
        print("| case | run | old s | new s | old / new | residual after mm old / new |")
        print("|---|---|---|---|---|---|", flush=True)
        for name in cases:
            if not CASES[name][0].exists():
                print(f"skip {name}: {CASES[name][0]} not found", file=sys.stderr)
                continue
            olds, news = [], []
            for k in range(repeats):
                # alternate which goes first, so a drift in the machine's speed hits both
                order = [("old", old_tree), ("new", ROOT)]
                runs = dict(
                    (label, _register_cli(tree, name, threads, work))
                    for label, tree in (order if k % 2 == 0 else order[::-1])
                )
                (old, m_old), (new, m_new) = runs["old"], runs["new"]
                olds.append(old)
                news.append(new)
                print(
                    f"| {name} | {k + 1} | {old:.1f} | {new:.1f} | {old / new:.2f}x | "
                    f"{m_old['residual_after']['mean_mm']:.3f} / "
                    f"{m_new['residual_after']['mean_mm']:.3f} |",
                    flush=True,
                )
            old, new = statistics.median(olds), statistics.median(news)
            print(f"| **{name}** | median | {old:.1f} | {new:.1f} | **{old / new:.2f}x** | |")


# ---------------------------------------------------------------------- growth
def growth(threads: int, device: str | None) -> None:
    """copd1 at GROWTH_POINTS, library call without outputs; time ~ N^a fitted by least
    squares on log-log over the registered source points."""
    print(
        f"copd1 (lung_vessels), library register without outputs, {threads} thread(s), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| input.points | registered | total s | non-rigid s | peak RSS MB |")
    print("|---|---|---|---|---|", flush=True)
    sizes, seconds = [], []
    for points in GROWTH_POINTS:
        r = profile_case("copd1", _settings("copd1", points, device), threads, outputs=False)
        if r is None:
            continue
        n = r["points"]["source"]
        run_s = sum(s["s"] for s in r["steps"] if s["step"] != "loading")
        peak = max(s["peak_mb"] for s in r["steps"])
        print(
            f"| {points} | {n} | {run_s:.2f} | {r['times']['nonrigid_s']:.2f} | {peak:.0f} |",
            flush=True,
        )
        sizes.append(n)
        seconds.append(run_s)
    if len(sizes) >= 2:
        xs, ys = [math.log(n) for n in sizes], [math.log(s) for s in seconds]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        print(f"\ntime ~ N^{slope:.2f} (least squares over {len(sizes)} sizes; bar: N^1.2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--points", type=int, default=None, help="input.points (default: the preset's)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch/OpenMP threads")
    parser.add_argument("--cases", nargs="+", default=None, choices=list(CASES))
    parser.add_argument("--device", default=None, help="the config's device (auto, cpu, cuda)")
    parser.add_argument(
        "--no-outputs",
        action="store_true",
        help="profile the library register() alone (no files, no report)",
    )
    parser.add_argument("--baseline", metavar="COMMIT", help="compare with this commit's CLI")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side with --baseline")
    parser.add_argument("--growth", action="store_true", help="copd1 at 10k, 20k, 40k, all points")
    parser.add_argument(
        "--large",
        type=int,
        metavar="K",
        help="profile copd1 made K times denser (K = 5: a 300k-point tree per phase) with "
        "input.points = 0 (all points), steps printed as they end",
    )
    args = parser.parse_args()
    if args.large:
        with tempfile.TemporaryDirectory(prefix="otreg-large-") as folder:
            make_large_case(args.large, Path(folder))
            name = f"copd1x{args.large}"
            print(
                f"otreg pipeline profile of {name} (input.points = 0), {args.threads} thread(s), "
                f"load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            settings = _settings("copd1", 0, args.device)
            r = profile_case(name, settings, args.threads, not args.no_outputs, progress=True)
            if r is not None:
                print_profile(name, r)
        return
    if args.baseline:
        baseline(args.baseline, args.cases or ["copd1", "dirlab2"], args.threads, args.repeats)
        return
    if args.growth:
        growth(args.threads, args.device)
        return
    print(
        f"otreg pipeline profile, {args.threads} thread(s), "
        f"{'library register()' if args.no_outputs else 'otreg.run (outputs and report written)'}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for name in args.cases or ["sample", "copd1"]:
        if not CASES[name][0].exists():
            print(
                f"skip {name}: {CASES[name][0]} not found (../shared/data is absent)",
                file=sys.stderr,
            )
            continue
        settings = _settings(name, args.points, args.device)
        r = profile_case(name, settings, args.threads, outputs=not args.no_outputs)
        if r is not None:
            print_profile(name, r)


if __name__ == "__main__":
    main()
