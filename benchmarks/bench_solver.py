"""OT solver speed, memory and accuracy: otreg beside GeomLoss (multiscale, online), in one run.

Each cloud (uniform cube, lung-surface-like ellipsoidal shell, vessel-tree-like segments) is
matched to a smoothly deformed (7 % of the diameter), independently resampled copy of itself;
blur = 1 % of the diameter, p = 2 (cost |x - y|^2 / 2). Every measurement runs in its own
process (its own peak memory): a first call (compilation of KeOps formulas included, if not
cached; otreg's own kernels are built by its install), then the median of ``--repeats`` calls.

What each solver reports as the OT cost:
- otreg: the solve, then its certificate (``OTSolution.bounds()``, timed with the solve): the
  lower bound (a feasible dual: the c-transform of the Sinkhorn potential) is otreg's estimate;
  the primal cost of the entropic plan and the upper bound (the plan rounded onto the exact
  marginals) are printed too. The entropic plan's own cost is biased up by the blur (2-5 % on
  these clouds at blur 1 %, measured against exact EMD at 10k).
- GeomLoss: ``SamplesLoss("sinkhorn", p=2, blur=..., scaling=0.9)`` (debiased Sinkhorn
  divergence, its estimate of OT; scaling 0.9 rather than its default 0.5 for accuracy).

Reference: POT's exact EMD up to ``--exact-up-to`` points; above, otreg's certificate of a
solve at a quarter of the blur (an interval that contains the exact cost; its half-width is
printed). Scaling: the exponent of otreg's time from the smallest size >= 25k to the largest.

    python benchmarks/bench_solver.py                          # 10k 25k 50k 100k, all peers
    python benchmarks/bench_solver.py --sizes 10000 --kinds cube --peers otreg
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = ["otreg", "geomloss-multiscale", "geomloss-online"]


def cloud(kind: str, n: int, gen):
    """(n, 3) points in a unit box of the given kind."""
    import torch

    if kind == "cube":
        return torch.rand(n, 3, generator=gen)
    if kind == "surface":  # an ellipsoidal shell, like a lung surface
        d = torch.randn(n, 3, generator=gen)
        return 0.5 + d / d.norm(dim=1, keepdim=True) * torch.tensor([0.45, 0.3, 0.4])
    # tree: points along 64 random segments from a common trunk, like a vessel tree
    ends = torch.rand(64, 3, generator=gen)
    starts = torch.cat([torch.full((1, 3), 0.5), ends[:-1]])[
        torch.randint(0, 64, (64,), generator=gen)
    ]
    seg = torch.randint(0, 64, (n,), generator=gen)
    t = torch.rand(n, 1, generator=gen)
    return starts[seg] + t * (ends[seg] - starts[seg]) + 0.003 * torch.randn(n, 3, generator=gen)


def deformed_pair(kind: str, n: int, seed: int = 0):
    """x, y (n, 3) float32 and the diameter of y's bounding box."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x, y = cloud(kind, n, gen), cloud(kind, n, gen)
    diameter = float((y.max(0).values - y.min(0).values).norm())
    y = y + 0.07 * diameter / math.sqrt(3) * torch.sin(3 * y[:, [1, 2, 0]])
    return x, y, diameter


# ----------------------------------------------------------------------------- child side
def _solve(solver: str, x, y, blur: float):
    """One solve -> dict of values (mm^2 units of the unit box)."""
    if solver == "otreg":
        from otreg.ot import sinkhorn

        s = sinkhorn(x, y, blur=blur, tol=1e-3, max_iter=2000)
        lower, upper = s.bounds()
        return {"value": lower, "primal": s.cost, "upper": upper, "iterations": s.iterations}
    if solver == "reference":  # a quarter of the blur, tightly converged: an interval around OT
        from otreg.ot import sinkhorn

        s = sinkhorn(x, y, blur=blur / 4, tol=1e-4, max_iter=2000)
        lower, upper = s.bounds()
        return {"value": (lower + upper) / 2, "halfwidth": (upper - lower) / 2}
    if solver == "exact":
        import numpy as np
        import ot

        a = np.full(len(x), 1 / len(x))
        b = np.full(len(y), 1 / len(y))
        cost = ot.dist(x.double().numpy(), y.double().numpy()) / 2
        return {"value": float(ot.emd2(a, b, cost, numItermax=10**8)), "halfwidth": 0.0}
    from geomloss import SamplesLoss

    backend = solver.split("-")[1]
    loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.9, backend=backend)
    return {"value": float(loss(x, y))}


def child(kind: str, n: int, solver: str, repeats: int) -> None:
    import torch

    x, y, diameter = deformed_pair(kind, n)
    blur = 0.01 * diameter
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = _solve(solver, x, y, blur)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = _solve(solver, x, y, blur)
        times.append(time.perf_counter() - t0)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(
        json.dumps(
            {
                **result,
                "first": first,
                "median": statistics.median(times) if times else first,
                "peak_mb": peak,
                "threads": torch.get_num_threads(),
            }
        )
    )


# ----------------------------------------------------------------------------- parent side
def run_child(kind: str, n: int, solver: str, repeats: int, env: dict) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, str(n), solver, str(repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        print(f"{solver} on {kind} {n} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def kernels_record(env: dict) -> str:
    """Which CPU kernels the children load (otreg.native.info): compiled with which flags."""
    code = "import json; from otreg import native; print(json.dumps(native.info()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        return "unknown"
    info = json.loads(out.stdout)
    if info["backend"] == "native":
        return f"compiled kernels: {info['build_flags']}, {info['compiler']}"
    return f"torch kernels: {info['reason']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 25_000, 50_000, 100_000])
    parser.add_argument("--kinds", nargs="+", default=["cube", "surface", "tree"])
    parser.add_argument("--peers", nargs="+", default=PEERS, choices=PEERS)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first")
    parser.add_argument(
        "--exact-up-to", type=int, default=10_000, help="POT exact EMD as reference up to N"
    )
    parser.add_argument(
        "--geomloss-repeats-above",
        type=int,
        nargs=2,
        default=[10_000, 0],
        metavar=("N", "R"),
        help="GeomLoss: only R timed calls after the first above N points (minutes per "
        "call on a CPU; R = 0: the first call is the figure)",
    )
    parser.add_argument(
        "--online-up-to", type=int, default=10_000, help="GeomLoss online only up to N points"
    )
    args = parser.parse_args()
    if args.child:
        kind, n, solver, repeats = args.child
        child(kind, int(n), solver, int(repeats))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": ROOT}
    print(
        f"OT solvers, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}, CPU "
        f"({kernels_record(env)})",
        flush=True,
    )
    print(
        "| cloud | N | solver | first s | median s | estimate | reference | rel. error | "
        "otreg primal / upper | peak MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    median = {}
    for n in args.sizes:  # every cloud at a size before the next size: the slowest come last
        for kind in args.kinds:
            ref = run_child(kind, n, "exact" if n <= args.exact_up_to else "reference", 0, env)
            reference = ref["value"] if ref else math.nan
            ref_text = (
                "POT exact"
                if n <= args.exact_up_to
                else f"±{ref['halfwidth'] / reference:.2%}"
                if ref
                else "-"
            )
            for solver in args.peers:
                repeats = args.repeats
                if solver.startswith("geomloss"):
                    if solver.endswith("online") and n > args.online_up_to:
                        continue
                    if n > args.geomloss_repeats_above[0]:
                        repeats = args.geomloss_repeats_above[1]
                r = run_child(kind, n, solver, repeats, env)
                if r is None:
                    continue
                median[kind, n, solver] = r["median"]
                error = abs(r["value"] - reference) / reference
                extra = (
                    f"{(r['primal'] - reference) / reference:+.2%} / {(r['upper'] - reference) / reference:+.2%}"
                    if solver == "otreg"
                    else ""
                )
                print(
                    f"| {kind} | {n} | {solver} | {r['first']:.2f} | {r['median']:.2f} | {r['value']:.6g} | "
                    f"{reference:.6g} ({ref_text}) | {error:.2%} | {extra} | {r['peak_mb']:.0f} |",
                    flush=True,
                )
    big = [n for n in args.sizes if n >= 25_000]
    for kind in args.kinds:
        if (
            len(big) >= 2
            and (kind, big[0], "otreg") in median
            and (kind, big[-1], "otreg") in median
        ):
            ratio = median[kind, big[-1], "otreg"] / median[kind, big[0], "otreg"]
            exponent = math.log(ratio) / math.log(big[-1] / big[0])
            print(f"{kind}: otreg time grows as N^{exponent:.2f} from {big[0]} to {big[-1]} points")


if __name__ == "__main__":
    main()
