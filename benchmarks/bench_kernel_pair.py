"""CPU seconds of the solver's kernel builds (`truncated_pair`), this checkout beside others.

The truncated kernels of one 100k-cube solve (bench_solver's cloud, blur 1 %) are recorded
once, then rebuilt from the same inputs in a fresh process per checkout, alternately, on one
thread. Process CPU time, not wall time: it holds on a loaded machine, where wall time does not.

    python benchmarks/bench_kernel_pair.py [--baseline /path/to/other/checkout ...] [--rounds 3]

A baseline is a checkout of otreg whose kernels work (its extension built, or an older commit
that compiles them at run time); ``git worktree add --detach /tmp/old <commit>`` makes one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_RECORD = r"""
import sys, torch
sys.path.insert(0, sys.argv[2])
from bench_solver import deformed_pair
import otreg.ot.sparse as sparse
from otreg.ot import sinkhorn
calls, build = [], sparse.truncated_pair
def record(*args, **kwargs):
    calls.append((args, kwargs))
    return build(*args, **kwargs)
sparse.truncated_pair = record
import otreg.ot.multiscale as multiscale
multiscale.truncated_pair = record
x, y, diameter = deformed_pair("cube", int(sys.argv[3]))
sinkhorn(x, y, blur=0.01 * diameter, tol=1e-3, max_iter=2000)
torch.save(calls, sys.argv[1])
"""

_REPLAY = r"""
import sys, time, torch
torch.set_num_threads(1)
import otreg.ot.sparse as sparse
calls = torch.load(sys.argv[1], weights_only=False)
start = time.process_time()
for args, kwargs in calls:
    sparse.truncated_pair(*args, **kwargs)
print(len(calls), time.process_time() - start)
"""


def replay(checkout: Path, calls: Path) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _REPLAY, str(calls)], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"{checkout}: the replay failed:\n{out.stderr}")
    count, seconds = out.stdout.split()
    return int(count), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", nargs="*", type=Path, default=[], help="other checkouts")
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="replays per checkout")
    args = parser.parse_args()
    checkouts = [ROOT, *args.baseline]
    with tempfile.TemporaryDirectory() as tmp:
        calls = Path(tmp) / "calls.pt"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(
            [sys.executable, "-c", _RECORD, str(calls), str(ROOT / "benchmarks"), str(args.points)],
            env=env,
            check=True,
        )
        times: dict[Path, list[float]] = {c: [] for c in checkouts}
        for _ in range(args.rounds):
            for checkout in checkouts:
                count, seconds = replay(checkout, calls)
                times[checkout].append(seconds)
    print(f"{count} kernel builds of a {args.points}-point cube solve, 1 thread, CPU s")
    print("| checkout | CPU s (each replay) | min |")
    print("|---|---|---|")
    for checkout, runs in times.items():
        print(f"| {checkout} | {' '.join(f'{t:.2f}' for t in runs)} | {min(runs):.2f} |")


if __name__ == "__main__":
    main()
