"""Surface registration accuracy on lung lobe surfaces with a known synthetic breathing motion.

Data: the LUNA16 left-lower-lobe surfaces in ``../shared/data/luna16_lung_surfaces`` (6,006
points per subject, no cells). Per subject:

1. the source mesh is a triangulated surface rebuilt from the points
   (``pyvista.PolyData.reconstruct_surface``, sample spacing 4 mm: about 9,000 vertices);
2. the points are moved by a smooth breathing-like motion (:func:`breathing`: the base descends
   by up to 20 mm, the front moves forward by up to 3 mm, the sides outwards by up to 2 mm;
   det J >= 0.9), and the target mesh is rebuilt from the moved points at another spacing
   (3.5 mm): an independent triangulation, so no vertex of one mesh has a partner in the other;
3. ``otreg.register`` maps the source onto the target (area-weighted vertices); the error is
   |phi(x) - (x + motion(x))| at the 6,006 original points (they lie on the source surface, within
   the rebuilt mesh's 1.5 mm), mean and 95th percentile, in mm.

    python benchmarks/bench_surface.py [--subjects 3] [--config lung_surface] [--set k=v ...]
                                       [--offset DEGREES MM]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sample_data"))
from synthetic_lobes import make_pair  # noqa: E402  (a data maker beside the sample data)

DATA = ROOT.parent / "shared" / "data" / "luna16_lung_surfaces"


def subject_files(n: int) -> list[Path]:
    """The first ``n`` LUNA16 lobe surfaces (sorted by name; fewer where the data has fewer)."""
    return sorted(DATA.glob("*_lung_surface.vtk"))[:n]


def offset_matrix(degrees: float, mm: float, center: np.ndarray) -> np.ndarray:
    """(4, 4) a rotation of ``degrees`` about an oblique axis through ``center`` (mm), then a
    translation of ``mm`` along another oblique direction: a misaligned target."""
    from scipy.spatial.transform import Rotation

    matrix = np.eye(4)
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    matrix[:3, :3] = Rotation.from_rotvec(np.radians(degrees) * axis).as_matrix()
    matrix[:3, 3] = center - matrix[:3, :3] @ center + mm * np.array([2.0, -1.0, 2.0]) / 3.0
    return matrix


def run_subjects(
    files: list[Path], config, emit=print, offset: tuple[float, float] = (0.0, 0.0)
) -> list[float]:
    """Register each subject's synthetic pair with ``config``; ``emit`` one table row per
    subject as it ends. ``offset`` (degrees, mm): the target (and the true positions) moved
    rigidly by :func:`offset_matrix` about the lobe's centre first. Returns the mean error (mm)
    per subject."""
    import otreg
    from otreg.transforms.rigid import apply_matrix

    means = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            source_file, target_file, points, truth = make_pair(path, Path(tmp))
            # the files carry no SPACE= tag; the known motion is in their stored coordinates
            source, target = (otreg.load(f, mesh_frame="ras") for f in (source_file, target_file))
            if any(offset):
                matrix = offset_matrix(*offset, points.mean(0))
                target = otreg.PointCloud(
                    apply_matrix(matrix, target.points), target.weights, target.features
                )
                truth = apply_matrix(matrix, truth)
            started = time.perf_counter()
            result = otreg.register(source, target, config)
            runtime = time.perf_counter() - started - result.metrics["times"].get("quality_s", 0.0)
            error = np.linalg.norm(result.transform(points) - truth, axis=1)
            before = np.linalg.norm(points - truth, axis=1).mean()
            jacobian = result.metrics.get("jacobian", {}).get("min", float("nan"))
            means.append(float(error.mean()))
            emit(
                f"| {path.stem.split('_')[0]} | {len(source)}/{len(target)} | {before:.2f} | "
                f"{error.mean():.2f} | {np.percentile(error, 95):.2f} | {jacobian:.2f} | {runtime:.1f} |"
            )
    return means


TABLE_HEADER = (
    "| subject | vertices src/tgt | error before mm | mean mm | p95 mm | min det J | runtime s |\n"
    "|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3, help="first N subjects (sorted by name)")
    parser.add_argument("--config", default="lung_surface", help="preset or TOML file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="section.key=value"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--offset",
        type=float,
        nargs=2,
        default=(0.0, 0.0),
        metavar=("DEGREES", "MM"),
        help="move the target rigidly first (an oblique rotation about the lobe's centre, a translation)",
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    import otreg

    files = subject_files(args.subjects)
    if not files:
        print(f"no data: {DATA} not found", file=sys.stderr)
        return
    config = otreg.load_config(args.config, args.overrides)
    print(
        f"config {args.config} {' '.join(args.overrides)}; {args.threads} thread(s); "
        f"target offset {args.offset[0]:g} degrees, {args.offset[1]:g} mm"
    )
    print(TABLE_HEADER, flush=True)
    means = run_subjects(
        files, config, emit=lambda line: print(line, flush=True), offset=tuple(args.offset)
    )
    print(f"| mean | | | {np.mean(means):.2f} | | | |")
    print(f"| worst | | | {np.max(means):.2f} | | | |")


if __name__ == "__main__":
    main()
