"""Shared test fixtures.

``shared_data``: the folder of real patient data, ``../shared/data`` next to the repository
(never copied into it). Tests that use it are skipped, with the reason, when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test when that folder does not exist."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found: {SHARED_DATA} (real-data tests need it)")
    return SHARED_DATA


# A quick registration of the sample pair (one round on 400 points, about 1-2 s after the
# imports): what the batch tests run in each case.
QUICK_BATCH_SETTINGS = [
    "input.points=400",
    "rigid.points=200",
    "rigid.iterations=5",
    "rigid.principal_axes=false",
    "output.grid_spacing=16",
    "match.blur=[8.0]",
    "match.reach=[20.0]",
    "smooth.sigma=[20.0]",
    "smooth.regression=['gaussian']",
]
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture
def batch_study():
    """A function writing a batch pipeline + manifest of quick cases of the sample pair:
    ``batch_study(folder, case_ids, landmarks=True, extra="")`` -> the pipeline file. Cases
    alternate forward (exhale -> inhale) and backward, case k with seed k; OUT is folder/out."""

    def write(
        folder: Path, case_ids: list[str], *, landmarks: bool = True, extra: str = ""
    ) -> Path:
        import json

        folder.mkdir(parents=True, exist_ok=True)
        header = "case,source,target,source_landmarks,target_landmarks,seed"
        rows = [header if landmarks else "case,source,target,seed"]
        for k, case in enumerate(case_ids):
            a, b = ("exhale", "inhale") if k % 2 == 0 else ("inhale", "exhale")
            files = [SAMPLE / f"{a}_vessels.vtk", SAMPLE / f"{b}_vessels.vtk"]
            if landmarks:
                files += [SAMPLE / f"{a}_landmarks.txt", SAMPLE / f"{b}_landmarks.txt"]
            rows.append(",".join([case, *map(str, files), str(k)]))
        (folder / "cases.csv").write_text("\n".join(rows) + "\n")
        overrides = ", ".join(json.dumps(o) for o in QUICK_BATCH_SETTINGS)
        path = folder / "pipeline.toml"
        path.write_text(
            'manifest = "cases.csv"\noutput = "out"\n[registration]\nconfig = "lung_vessels"\n'
            f"set = [{overrides}]\n{extra}\n"
        )
        return path

    return write
