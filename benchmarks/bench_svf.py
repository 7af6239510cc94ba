"""The SVF fields' grid sampling: torch's grid_sample against otreg's compiled kernels.

Times, in one process and side by side, each operation once through the torch path (as with
``OTREG_NATIVE=0``) and once through the compiled kernels (``otreg.native.kernels.trilinear``,
``squaring_step``), alternately, and prints the median of ``--repeats`` runs of each, their
ratio and the largest difference of their results (mm):

- ``exp_velocity`` of a smooth breathing-like velocity (a Gaussian of 60 mm width, 15 mm at
  most) on a DIR-LAB-sized grid, (80, 64, 80) nodes at 4 mm, and on a copd1-sized one,
  (74, 62, 85) nodes at 3.5 mm (the last lung_vessels round's grid: spacing sigma / 2 =
  3.5 mm over the bounding box of both copd1 clouds plus sigma = 7 mm);
- ``sample_grid`` of 1.4M float64 points on the DIR-LAB grid's (80, 64, 80, 4) channels (the
  displacement and the confidence, as ``SVFField.__call__`` samples them): points on a finer
  regular grid in C order (as the quality check's probes and the dense outputs come), and the
  same points shuffled;
- ``velocity_and_exponential`` of that displacement on the DIR-LAB grid (the fit of a round:
  five exponentials).

A benchmark, not a test. Run it on an otherwise idle machine (the header says the load):

    python benchmarks/bench_svf.py --threads 1 [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

DIRLAB_GRID = ((80, 64, 80), 4.0)  # nodes, spacing mm
COPD1_GRID = ((74, 62, 85), 3.5)
SAMPLED_POINTS = 1_400_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch's and the kernels' threads")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch

    from otreg import native
    from otreg.transforms import svf

    torch.set_num_threads(args.threads)
    if not native.available():
        raise SystemExit(f"otreg's compiled kernels are not usable: {native.info()['reason']}")

    def on_path(compiled: bool, run):
        """run() with the compiled kernels or the torch path; (seconds, result)."""
        if compiled:
            os.environ.pop(native.DISABLE_ENV, None)
        else:
            os.environ[native.DISABLE_ENV] = "0"
        native._loaded.cache_clear()
        try:
            started = time.perf_counter()
            result = run()
            return time.perf_counter() - started, result
        finally:
            os.environ.pop(native.DISABLE_ENV, None)
            native._loaded.cache_clear()

    def compare(run):
        """(torch median s, compiled median s, max |difference|), alternating the paths."""
        times: dict[bool, list[float]] = {False: [], True: []}
        results = {}
        for repeat in range(args.repeats):
            for compiled in (False, True) if repeat % 2 == 0 else (True, False):
                seconds, results[compiled] = on_path(compiled, run)
                times[compiled].append(seconds)
        torch_result, compiled_result = results[False], results[True]
        if isinstance(torch_result, tuple):  # velocity_and_exponential: (velocity, reached)
            torch_result, compiled_result = torch_result[1], compiled_result[1]
        difference = float(np.abs(np.asarray(torch_result) - np.asarray(compiled_result)).max())
        return statistics.median(times[False]), statistics.median(times[True]), difference

    def velocity(shape, spacing: float, amplitude: float = 15.0) -> np.ndarray:
        nodes = np.stack(
            np.meshgrid(*(np.arange(s, dtype=np.float64) for s in shape), indexing="ij"), -1
        )
        centre = (np.array(shape) - 1) * np.array([0.5, 0.45, 0.35])
        bump = np.exp(-(((nodes - centre) * spacing) ** 2).sum(-1) / (2 * 60.0**2))
        direction = np.array([0.2, 0.4, 1.0]) / np.linalg.norm([0.2, 0.4, 1.0])
        return amplitude * bump[..., None] * direction

    rows = []
    for name, (shape, spacing) in (("DIR-LAB", DIRLAB_GRID), ("copd1", COPD1_GRID)):
        v = velocity(shape, spacing).astype(np.float32)
        n = svf.squarings_for(v, spacing)
        what = f"{name} grid {shape} at {spacing:g} mm, {n} squarings"
        rows.append(
            (
                "exp_velocity",
                what,
                *compare(lambda v=v, spacing=spacing: svf.exp_velocity(v, spacing)),
            )
        )

    shape, spacing = DIRLAB_GRID
    u = svf.exp_velocity(velocity(shape, spacing), spacing)
    channels = np.concatenate([u, np.full((*shape, 1), 0.8)], axis=3)
    side = round(SAMPLED_POINTS ** (1 / 3))
    axes = [np.linspace(-2.0, s + 1.0, side) for s in shape]  # a little beyond the border too
    index = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    shuffled = index[np.random.default_rng(0).permutation(len(index))]
    for order, points in (("C order", index), ("shuffled", shuffled)):
        what = f"{len(points):,} float64 points ({order}) on a {shape} x 4 grid"
        rows.append(
            ("sample_grid", what, *compare(lambda points=points: svf.sample_grid(channels, points)))
        )

    what = f"DIR-LAB grid {shape} at {spacing:g} mm, 5 exponentials"
    rows.append(
        (
            "velocity_and_exponential",
            what,
            *compare(lambda: svf.velocity_and_exponential(u, spacing)),
        )
    )

    print(
        f"SVF grid sampling: torch grid_sample against otreg's compiled kernels, median of "
        f"{args.repeats}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}"
    )
    print("| operation | what | torch s | compiled s | speed-up | max difference |")
    print("|---|---|---|---|---|---|")
    for operation, what, torch_s, compiled_s, difference in rows:
        print(
            f"| {operation} | {what} | {torch_s:.4f} | {compiled_s:.4f} | "
            f"{torch_s / compiled_s:.1f}x | {difference:.1e} |"
        )


if __name__ == "__main__":
    main()
