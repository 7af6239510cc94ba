"""Time of each registration step and peak memory, on real and sample lung pairs.

Prints one table (a benchmark, not a test). Each case runs in its own process so that its
peak memory (max RSS) is its own.

    python benchmarks/bench_pipeline.py [--points N] [--threads T] [--cases copd1 sample]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CASES = {
    "copd1": (
        DATA / "copd1_vessels" / "copd1_exhale_vessels.vtk",
        DATA / "copd1_vessels" / "copd1_inhale_vessels.vtk",
        "lung_vessels",
    ),
    "sample": (
        ROOT / "sample_data" / "exhale_vessels.vtk",
        ROOT / "sample_data" / "inhale_vessels.vtk",
        "lung_vessels",
    ),
}

_CHILD = r"""
import json, resource, sys, time
import otreg
src, tgt, preset, points = sys.argv[1:5]
cfg = otreg.load_config(preset, [f"input.points={points}"])
t0 = time.perf_counter(); s = otreg.load(src); t = otreg.load(tgt); load_s = time.perf_counter() - t0
t0 = time.perf_counter(); r = otreg.register(s, t, cfg); total = time.perf_counter() - t0
print(json.dumps({"n_source": len(s), "n_target": len(t), "points": r.metrics["points"], "load_s": load_s,
    "total_s": total, **r.metrics["times"], "residual_before": r.metrics["residual_before"]["mean_mm"],
    "residual_after": r.metrics["residual_after"]["mean_mm"], "device": r.metrics["device"],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20000, help="input.points (0 = all)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch/OpenMP threads")
    parser.add_argument("--cases", nargs="+", default=["sample", "copd1"], choices=list(CASES))
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    # Rows are printed as each case ends, so a run cut short still shows what it measured.
    print(
        f"otreg pipeline, {args.threads} thread(s), input.points={args.points}, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| case | points in (src/tgt) | registered | load s | sampling s | rigid s | non-rigid s | total s | peak RSS MB | residual mm before -> after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in args.cases:
        src, tgt, preset = CASES[name]
        if not src.exists():
            print(f"skip {name}: {src} not found (../shared/data is absent)", file=sys.stderr)
            continue
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(src), str(tgt), preset, str(args.points)],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            print(f"{name} failed:\n{out.stderr}", file=sys.stderr)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {name} | {r['n_source']}/{r['n_target']} | {r['points']['source']}/{r['points']['target']} | "
            f"{r['load_s']:.2f} | {r['sampling_s']:.2f} | {r.get('rigid_s', 0):.1f} | {r['nonrigid_s']:.1f} | "
            f"{r['total_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['residual_before']:.2f} -> {r['residual_after']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
