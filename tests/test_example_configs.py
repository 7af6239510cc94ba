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
