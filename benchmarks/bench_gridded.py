"""The intermediate rounds' kernel averages: exact against through a grid, on real rounds.

Registers a pair (copd1 by default) with the library, records every kernel-average field that
a round evaluates at the points, then times the exact average (``KernelField.__call__``) and
the gridded one (:func:`otreg.transforms.gridded.gridded_average`) on each, one after the
other, and prints their distance (mm) and whether the pipeline's cost rule
(:func:`otreg.transforms.gridded.pays`) picks the grid there. A benchmark, not a test.

    python benchmarks/bench_gridded.py --threads 1 [--case copd1|sample|dirlab1-5] [--points N]
"""

from __future__ import annotations

import argparse
import os
import time

from bench_pipeline import CASES  # the cases as bench_pipeline registers them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case", choices=[c for c in CASES if not c.startswith("copd1x")], default="copd1"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--points", type=int, help="input.points (default: the preset's)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch

    import otreg
    import otreg.io
    from otreg.transforms import gridded
    from otreg.transforms.field import KernelField

    torch.set_num_threads(args.threads)
    source, target, preset, settings = CASES[args.case]
    if not source.exists():
        raise SystemExit(f"{source} not found")
    calls = []
    exact_call = KernelField.__call__

    def recording(self, points, **kwargs):
        calls.append((self, np.array(points, dtype=np.float64)))
        return exact_call(self, points, **kwargs)

    field_at = gridded.field_at

    def exact_field_at(field, points):  # the rounds' fields, recorded, evaluated exactly
        return recording(field, points) if isinstance(field, KernelField) else field(points)

    if args.points is not None:
        settings = [*settings, f"input.points={args.points}"]
    cfg = otreg.load_config(preset, settings)
    s = otreg.load(source, **otreg.io.load_options(cfg.input))
    t = otreg.load(target, **otreg.io.load_options(cfg.input))
    import otreg.pipeline

    otreg.pipeline.field_at = exact_field_at
    try:
        otreg.register(s, t, cfg)
    finally:
        otreg.pipeline.field_at = field_at
    print(
        f"{args.case} ({preset}): the rounds' kernel averages at the points, exact against "
        f"gridded (h = sigma / {gridded.NODES_PER_SIGMA}), {args.threads} thread(s), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| controls | points | sigma mm | grid picked | exact s | gridded s | max mm | mean mm |")
    print("|---|---|---|---|---|---|---|---|")
    for field, points in calls:
        args_ = (field.controls, field.values, field.weights, field.sigma, points)
        picked = gridded.pays(field.controls, points, field.sigma, field.values.shape[1])
        started = time.perf_counter()
        exact = field(points)
        middle = time.perf_counter()
        row = f"| {len(field.controls)} | {len(points)} | {field.sigma:g} | {'yes' if picked else 'no'} "
        row += f"| {middle - started:.3f} |"
        _, _, shape = gridded._grid(field.controls, points, field.sigma)
        if np.prod(shape.astype(float)) > gridded._MAX_NODES:
            print(row + " grid too large | | |", flush=True)
            continue
        approx = gridded.gridded_average(*args_)
        done = time.perf_counter()
        error = np.linalg.norm(approx[:, :3] - exact[:, :3], axis=1)
        print(row + f" {done - middle:.3f} | {error.max():.4f} | {error.mean():.5f} |", flush=True)


if __name__ == "__main__":
    main()
