"""Time a whole ``otreg.register`` of the copd1 vessel pair on a chosen device, without VTK.

Reads the pair from ``.devdata/copd1_{exhale,inhale}.npz`` (written by
``export_device_data.py``) or, where those are absent and otreg can read meshes, from
``../shared/data/copd1_vessels``. Runs the registration ``--repeats`` + 1 times in this
process (the first pays CUDA's start-up and torch's first kernels) and prints one table row
per run: the stage times of ``metrics["times"]``, the total, the residual and the peak memory
(GPU: ``torch.cuda.max_memory_allocated``; CPU: max RSS). A benchmark, not a test.

    python benchmarks/bench_register_device.py --device cuda
    python benchmarks/bench_register_device.py --device cpu --points 3000 --repeats 0
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEVDATA = ROOT / ".devdata"
MESHES = ROOT.parent / "shared" / "data" / "copd1_vessels"


def load_pair(devdata: Path):
    """(source = exhale, target = inhale) PointClouds from .npz copies, else the meshes."""
    from otreg.pointcloud import PointCloud

    clouds = []
    for phase in ("exhale", "inhale"):
        path = devdata / f"copd1_{phase}.npz"
        if path.exists():
            with np.load(path) as data:
                features = {
                    k.removeprefix("feature_"): data[k]
                    for k in data.files
                    if k.startswith("feature_")
                }
                clouds.append(PointCloud(data["points"], data["weights"], features, str(path)))
            continue
        mesh = MESHES / f"copd1_{phase}_vessels.vtk"
        if not mesh.exists():
            raise SystemExit(f"neither {path} nor {mesh} exists: run export_device_data.py")
        import otreg

        clouds.append(otreg.load(mesh))
    return clouds[0], clouds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--points", type=int, default=20000, help="input.points (0 = all)")
    parser.add_argument("--preset", default="lung_vessels")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after the first")
    parser.add_argument("--set", action="append", default=[], help="config overrides")
    parser.add_argument("--devdata", type=Path, default=DEVDATA)
    args = parser.parse_args()

    import torch

    import otreg

    source, target = load_pair(args.devdata)
    overrides = [f"input.points={args.points}", f"device={args.device}", *args.set]
    config = otreg.load_config(args.preset, overrides)
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(
        f"otreg register copd1 on {where}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"CPU thread(s), {len(source)}/{len(target)} points in, overrides {overrides}",
        flush=True,
    )
    stages = ["sampling_s", "rigid_s", "nonrigid_s", "quality_s"]
    print("| run | registered | " + " | ".join(stages) + " | total s | residual mm | peak MB |")
    print("|---|---|" + "---|" * (len(stages) + 3), flush=True)
    for run in range(args.repeats + 1):
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        result = otreg.register(source, target, config)
        if args.device == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - t0
        m = result.metrics
        peak = (
            torch.cuda.max_memory_allocated() / 2**20
            if args.device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )
        times = " | ".join(f"{m['times'][s]:.2f}" if s in m["times"] else "-" for s in stages)
        print(
            f"| {'first' if run == 0 else run} | {m['points']['source']}/{m['points']['target']} | "
            f"{times} | {total:.2f} | {m['residual_before']['mean_mm']:.2f} -> "
            f"{m['residual_after']['mean_mm']:.2f} | {peak:.0f} |",
            flush=True,
        )
    other = sorted(set(result.metrics["times"]) - set(stages))
    if other:
        print("other times:", {k: round(result.metrics["times"][k], 3) for k in other})


if __name__ == "__main__":
    main()
