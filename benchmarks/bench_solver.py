"""OT solver speed and accuracy, otreg side by side with GeomLoss and POT, in one run.

Each cloud (uniform cube, lung-surface-like shell, vessel-tree-like segments) is matched to a
smoothly deformed (7 % of the diameter), independently resampled copy of itself; blur = 1 % of
the diameter, p = 2. Times are medians of 3 solves after a warm-up (KeOps/first-call set-up is
reported separately as 'first s'); the error is the cost's relative difference from a
reference: POT's exact EMD up to 5,000 points, above that otreg's certificate midpoint, with
its half-width printed.

    python benchmarks/bench_solver.py [--sizes 10000 50000] [--kinds cube surface tree]
                                      [--peers geomloss-multiscale geomloss-online pot]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import time

import torch


def cloud(kind: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3) points in a unit box of the given kind."""
    if kind == "cube":
        return torch.rand(n, 3, generator=gen)
    if kind == "surface":  # an ellipsoidal shell, like a lung surface
        d = torch.randn(n, 3, generator=gen)
        return 0.5 + d / d.norm(dim=1, keepdim=True) * torch.tensor([0.45, 0.3, 0.4])
    # tree: points along 64 random segments from a common trunk, like a vessel tree
    ends = torch.rand(64, 3, generator=gen)
    starts = torch.cat([torch.full((1, 3), 0.5), ends[:-1]])[torch.randint(0, 64, (64,), generator=gen)]
    seg = torch.randint(0, 64, (n,), generator=gen)
    t = torch.rand(n, 1, generator=gen)
    return starts[seg] + t * (ends[seg] - starts[seg]) + 0.003 * torch.randn(n, 3, generator=gen)


def deformed_pair(kind: str, n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x, y = cloud(kind, n, gen), cloud(kind, n, gen)
    diameter = float((y.max(0).values - y.min(0).values).norm())
    y = y + 0.07 * diameter / math.sqrt(3) * torch.sin(3 * y[:, [1, 2, 0]])
    return x, y, diameter


def timed(solve, repeats: int = 3):
    t0 = time.perf_counter()
    value = solve()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = solve()
        times.append(time.perf_counter() - t0)
    return value, first, statistics.median(times)


def otreg_solver(x, y, blur):
    from otreg.ot import sinkhorn

    return lambda: sinkhorn(x, y, blur=blur, tol=1e-3, max_iter=1000)


def geomloss_solver(x, y, blur, backend):
    from geomloss import SamplesLoss

    # GeomLoss's loss is OT_eps with C = |x - y|^2 / 2 at p = 2; scaling 0.9 for accuracy
    loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.9, debias=False, backend=backend)
    return lambda: float(loss(x, y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--kinds", nargs="+", default=["cube", "surface", "tree"])
    parser.add_argument("--peers", nargs="*", default=["geomloss-multiscale", "geomloss-online", "pot"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"OT solvers, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}, "
          f"device cpu, torch {torch.__version__}")
    print("| cloud | N | solver | first s | median s | cost | reference | rel. error | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        for n in args.sizes:
            x, y, diameter = deformed_pair(kind, n)
            blur = 0.01 * diameter
            sol, first, median = timed(otreg_solver(x, y, blur))
            if n <= 5000 and "pot" in args.peers:
                import ot

                a = torch.full((n,), 1 / n, dtype=torch.float64).numpy()
                reference = float(ot.emd2(a, a, ot.dist(x.double().numpy(), y.double().numpy()) / 2,
                                          numItermax=10**7))
                ref_text = "POT exact"
            else:
                lower, upper = sol.bounds() if n <= 50_000 else (math.nan, math.nan)
                reference = (lower + upper) / 2
                ref_text = f"bounds ±{(upper - lower) / 2 / reference:.2%}"
            rows = [("otreg", first, median, sol.cost)]
            for peer in args.peers:
                if not peer.startswith("geomloss"):
                    continue
                backend = peer.split("-")[1]
                if backend == "online" and n > 20_000:
                    rows.append((peer, math.nan, math.nan, math.nan))  # minutes per solve
                    continue
                value, first, median = timed(geomloss_solver(x, y, blur, backend), repeats=1)
                rows.append((peer, first, median, value))
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            for name, first, median, cost in rows:
                error = abs(cost - reference) / reference if math.isfinite(reference) else math.nan
                print(f"| {kind} | {n} | {name} | {first:.2f} | {median:.2f} | {cost:.6g} | "
                      f"{ref_text} | {error:.2%} | {rss:.0f} |", flush=True)


if __name__ == "__main__":
    main()
