"""Copy the copd1 vessel pair into ``.devdata/`` as .npz files that need no VTK to read.

A machine without vtk/pyvista (the GPU machine of ``benchmarks/device_check.sh``) cannot load
the .vtk meshes; this script, run where otreg loads them, saves each cloud as it is registered
(points mm RAS, weights, point arrays) for :mod:`bench_register_device` to read there.
``.devdata/`` is git-ignored: patient data never enters the repository.

    python benchmarks/export_device_data.py            # ../shared/data/copd1_vessels -> .devdata
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "copd1_vessels"
PHASES = {"exhale": "copd1_exhale_vessels.vtk", "inhale": "copd1_inhale_vessels.vtk"}


def export(data: Path, out: Path) -> list[Path]:
    import otreg

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for phase, name in PHASES.items():
        cloud = otreg.load(data / name)
        path = out / f"copd1_{phase}.npz"
        arrays = {f"feature_{k}": np.asarray(v) for k, v in cloud.features.items()}
        np.savez(path, points=cloud.points, weights=cloud.weights, **arrays)
        written.append(path)
        print(f"{path}: {len(cloud)} points, point arrays {sorted(cloud.features)}")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the copd1 .vtk pair")
    parser.add_argument("--out", type=Path, default=ROOT / ".devdata")
    args = parser.parse_args()
    if not (args.data / PHASES["exhale"]).exists():
        raise SystemExit(f"{args.data / PHASES['exhale']} not found (../shared/data is absent)")
    export(args.data, args.out)


if __name__ == "__main__":
    main()
