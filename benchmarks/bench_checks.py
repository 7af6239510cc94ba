"""The suspect-registration checks (metrics.json's "checks") on real pairs and broken ones.

Real pairs: the five DIR-LAB 4DCT cases (lung_points), the sample vessel pair (lung_vessels),
the CIP chest label maps (lung_mask), copd1's vessel trees (lung_vessels, with --copd1).
Broken pairs, made from DIR-LAB case 1: its exhale against case 4's inhale (two patients), its
inhale mirrored left-right, its inhale with the lower half cut away. With ``--surfaces N``: the
first N LUNA16 lobe-surface pairs of ``bench_surface.py`` (lung_surface; rebuilt meshes, a known
breathing motion) and two broken ones per subject: its source onto the next subject's target
(another patient), and onto its own target with the lower half cut away. Prints, per pair, the
matched share of the source's mass, the lowest share in one octant and in one half, the
inverse-consistency p95 and the flags raised.

    python benchmarks/bench_checks.py [--copd1] [--surfaces 12] [--no-volumes]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import otreg

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "sample_data"))
from synthetic_lobes import make_pair  # noqa: E402  (a data maker beside the sample data)


def dirlab(case: int, phase: str) -> otreg.PointCloud:
    return otreg.load(DATA / "dirlab4dct" / f"case{case}_{phase}_points.vtk")


def mirrored(cloud):
    points = cloud.points.copy()
    points[:, 0] = 2 * points[:, 0].mean() - points[:, 0]
    return cloud.with_points(points)


def lower_half_cut(cloud):
    return cloud.subset(cloud.points[:, 2] > np.median(cloud.points[:, 2]))


def surface_pairs(subjects: int, folder: Path):
    """The LUNA16 lobe pairs of bench_surface.py, and per subject its source onto the next
    subject's target and onto its own target's upper half."""
    files = sorted((DATA / "luna16_lung_surfaces").glob("*_lung_surface.vtk"))[:subjects]
    meshes = []
    for path in files:
        source_file, target_file, _, _ = make_pair(path, folder)
        source, target = (otreg.load(f, mesh_frame="ras") for f in (source_file, target_file))
        meshes.append((path.stem.split("_")[0], source, target))
    for name, source, target in meshes:
        yield f"LUNA16 {name}", "real", source, target
    for k, (name, source, target) in enumerate(meshes):
        if len(meshes) > 1:
            other, _, other_target = meshes[(k + 1) % len(meshes)]
            yield f"LUNA16 {name} onto {other}", "broken", source, other_target
        yield f"LUNA16 {name} onto its upper half", "broken", source, lower_half_cut(target)


def volume_pairs(copd1: bool):
    for case in range(1, 6):
        yield f"DIR-LAB case {case}", "real", dirlab(case, "exhale"), dirlab(case, "inhale")
    sample = ROOT / "sample_data"
    yield (
        "sample pair",
        "real",
        otreg.load(sample / "exhale_vessels.vtk"),
        otreg.load(sample / "inhale_vessels.vtk"),
    )
    cip = DATA / "cip_chest"
    yield (
        "CIP chest label maps",
        "real",
        otreg.load(cip / "lunglabels_moving.nii.gz"),
        otreg.load(cip / "lunglabels_fixed.nii.gz"),
    )
    if copd1:
        folder = DATA / "copd1_vessels"
        yield (
            "copd1 vessel trees",
            "real",
            otreg.load(folder / "copd1_exhale_vessels.vtk"),
            otreg.load(folder / "copd1_inhale_vessels.vtk"),
        )
    exhale = dirlab(1, "exhale")
    yield "case 1 onto case 4", "broken", exhale, dirlab(4, "inhale")
    yield "case 1 onto its mirror", "broken", exhale, mirrored(dirlab(1, "inhale"))
    yield "case 1 onto its upper half", "broken", exhale, lower_half_cut(dirlab(1, "inhale"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copd1", action="store_true", help="also copd1 (60k points, slower)")
    parser.add_argument(
        "--surfaces", type=int, default=2, help="LUNA16 lobe subjects (0: none; 12: all)"
    )
    parser.add_argument(
        "--no-volumes", action="store_true", help="only the LUNA16 surfaces (no DIR-LAB, CIP ...)"
    )
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"../shared/data not found ({DATA}): nothing to measure")
    from otreg.errors import OtregError
    from otreg.presets import preset_for

    print(
        "| pair | kind | preset | matched mass | lowest octant | lowest half | inverse p95 mm | flags |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        groups = [] if args.no_volumes else [volume_pairs(args.copd1)]
        groups.append(surface_pairs(args.surfaces, Path(tmp)))
        for group in groups:
            for name, kind, source, target in group:
                preset = preset_for(source, target)[0]
                try:
                    result = otreg.register(source, target, otreg.load_config(preset))
                except OtregError as error:  # a run that fails says so loudly enough
                    print(f"| {name} | {kind} | {preset} | - | - | - | - | failed: {error} |")
                    continue
                checks = result.metrics["checks"]
                inverse = result.metrics.get("inverse_consistency_mm", {}).get("p95_mm")
                flags = "; ".join(flag["title"] for flag in checks["flags"]) or "none"
                print(
                    f"| {name} | {kind} | {preset} | {checks['matched_mass']:.2f} | "
                    f"{checks['lowest_region_matched_mass']:.2f} | "
                    f"{checks['lowest_half_matched_mass']:.2f} | "
                    f"{'-' if inverse is None else f'{inverse:.2f}'} | {flags} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
