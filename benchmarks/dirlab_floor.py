"""How much of DIR-LAB's landmark error a point-cloud method can still remove: the data's floor.

For each DIR-LAB 4DCT case 1-5 (``../shared/data/dirlab4dct``, read as ``bench_accuracy.py``
reads it), ``otreg.register`` with the ``lung_points`` preset maps exhale onto inhale. Its map
then pairs the points: an exhale point and the inhale point nearest to its image are a pair when
each is the other's nearest (through the map) and they lie within ``--pair-mm`` (3 mm). The
DIR-LAB clouds are two noisy, 10 %-thinned copies of one set of correspondences (the data
README), so these pairs are the correspondences themselves, up to the points' own noise.
Printed per case, in mm:

- ``otreg``: the preset's mean TRE on the 300 expert landmarks;
- ``pairs TPS``: the mean TRE of another interpolator (scipy's thin-plate spline, affine part,
  smoothing 1) of the pairs' displacements: what a different smoother of the same
  correspondences gives;
- ``point CV``: the TPS's 10-fold cross-validated error at the paired points themselves (each
  point's displacement predicted from the other 90 %): the interpolation error where the
  motion is known;
- ``near / mid / far``: the preset's TRE on the landmarks in each third by distance to the
  nearest paired point (its median in brackets).

A landmark next to a paired point is about as far off as the others and well above the point
CV error: most of what remains lies in the landmarks (2.5 mm slices), not in the matching or
the interpolation.

    python benchmarks/dirlab_floor.py [--pair-mm 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_accuracy import SPACING, Case  # noqa: E402  (the cases as bench_accuracy reads them)


def correspondences(moved, target, limit: float):
    """Indices (i, j): exhale point i and inhale point j, mutual nearest neighbours through the
    map (``moved``: the exhale points mapped, (N, 3)) within ``limit`` mm."""
    import numpy as np
    from scipy.spatial import cKDTree

    distance, nearest = cKDTree(target).query(moved)
    _, back = cKDTree(moved).query(target)
    mutual = (back[nearest] == np.arange(len(moved))) & (distance < limit)
    return np.flatnonzero(mutual), nearest[mutual]


def thin_plate(points, values):
    from scipy.interpolate import RBFInterpolator

    return RBFInterpolator(points, values, kernel="thin_plate_spline", smoothing=1.0, degree=1)


def point_cv(points, values, folds: int = 10, seed: int = 0) -> float:
    """Mean error (mm) of the thin-plate spline at each point, fitted on the other folds."""
    import numpy as np

    fold = np.random.default_rng(seed).integers(0, folds, len(points))
    error = np.empty(len(points))
    for k in range(folds):
        held = fold == k
        predicted = thin_plate(points[~held], values[~held])(points[held])
        error[held] = np.linalg.norm(predicted - values[held], axis=1)
    return float(error.mean())


def floor_row(name: str, pair_mm: float) -> dict:
    import numpy as np
    from scipy.spatial import cKDTree

    import otreg
    from otreg.metrics import target_registration_error

    case = Case(name)
    case.load()
    result = otreg.register(
        case.source, case.target, otreg.load_config("lung_points", ["output.jacobian=false"])
    )
    tre = target_registration_error(result.transform(case.lm_source), case.lm_target)
    source = result.source.points
    i, j = correspondences(result.transform(source), case.target.points, pair_mm)
    pairs_from, displacement = source[i], case.target.points[j] - source[i]
    spline = thin_plate(pairs_from, displacement)
    tps = target_registration_error(case.lm_source + spline(case.lm_source), case.lm_target).mean()
    distance, _ = cKDTree(pairs_from).query(case.lm_source)
    thirds = np.array_split(np.argsort(distance), 3)
    return {
        "case": name,
        "points": len(source),
        "pairs": len(i),
        "otreg": float(tre.mean()),
        "tps": float(tps),
        "cv": point_cv(pairs_from, displacement),
        "thirds": [(float(tre[t].mean()), float(np.median(distance[t]))) for t in thirds],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair-mm", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    names = [f"dirlab{c}" for c in SPACING]
    missing = [p for c in names for p in Case(c).missing()]
    if missing:
        print(f"no data: {missing[0]} not found", file=sys.stderr)
        return
    print(
        "| case | points | pairs | otreg TRE mm | pairs TPS TRE mm | point CV mm | "
        "near / mid / far landmarks TRE mm (median distance mm) |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name in names:
        row = floor_row(name, args.pair_mm)
        rows.append(row)
        thirds = " / ".join(f"{t:.2f} ({d:.1f})" for t, d in row["thirds"])
        print(
            f"| {name} | {row['points']} | {row['pairs']} | {row['otreg']:.3f} | "
            f"{row['tps']:.3f} | {row['cv']:.3f} | {thirds} |",
            flush=True,
        )
    mean = lambda key: np.mean([r[key] for r in rows])  # noqa: E731
    near = np.mean([r["thirds"][0][0] for r in rows])
    print(
        f"| **mean** | | | **{mean('otreg'):.3f}** | **{mean('tps'):.3f}** | {mean('cv'):.3f} | "
        f"near third {near:.3f} |"
    )


if __name__ == "__main__":
    main()
