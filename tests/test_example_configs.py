"""The example configs in configs/ are valid, and say true things about the presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from otreg.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_loads(path):
    load_config(path)


def test_the_vessel_study_repeats_its_preset():
    assert load_config(CONFIGS / "vessel_study.toml") == load_config("lung_vessels")


def test_the_mask_study_is_its_preset_with_labels():
    example = load_config(CONFIGS / "mask_study.toml")
    assert example.input.label == [1, 2]
    assert example.model_copy(
        update={"input": example.input.model_copy(update={"label": []})}
    ) == load_config("lung_mask")


BATCH_STUDY = CONFIGS / "batch_study"


def test_the_batch_study_example_is_valid():
    from otreg.batch import validate

    pipeline, cases, problems = validate(BATCH_STUDY / "pipeline.toml")
    assert problems == []
    assert len(cases) == 3 and pipeline.config == "lung_vessels"
    assert all(case.source_landmarks is not None for case in cases)


@pytest.mark.slow
def test_the_batch_study_example_runs_on_the_sample_data(tmp_path):
    """The example pipeline as a user copies it, its output moved out of the repository."""
    import tomli_w

    from otreg.batch import run_batch
    from otreg.batch.summary import summarize
    from otreg.config import tomllib  # tomli before Python 3.11

    settings = tomllib.loads((BATCH_STUDY / "pipeline.toml").read_text())
    settings.update(manifest=str(BATCH_STUDY / "cases.csv"), output=str(tmp_path / "out"))
    # the report's pictures: tests/test_report.py (here they took a quarter of the CPU time)
    settings["registration"]["set"].append("output.report_pictures=false")
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(tomli_w.dumps(settings))
    result = run_batch(pipeline)
    assert result.exit_code == 0 and len(result.ok) == 3
    rows = summarize(tmp_path / "out")
    assert [row["status"] for row in rows] == ["ok"] * 3
    for row in rows:
        assert row["tre_after_mm"] < row["tre_before_mm"] / 2
        assert row["folding_fraction"] == 0
