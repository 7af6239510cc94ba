"""The OT kernels' memory is estimated, and refused above the budget, before any work."""

from __future__ import annotations

import numpy as np
import pytest

import otreg
from otreg import pipeline
from otreg.errors import ConfigError
from otreg.limits import kernel_entries_per_row, memory_limit
from otreg.pointcloud import PointCloud


def test_entries_per_row_count_the_occupied_cells_within_the_truncation_radius():
    rng = np.random.default_rng(0)
    # a filled cube (every cell occupied), rows at least the radius from its sides: the ball's cells
    cube = rng.uniform(0, 160, (200_000, 3))
    blur, truncation = 8.0, 10.0
    ball = 4 / 3 * np.pi * (np.sqrt(2 * truncation) * blur / (0.75 * blur)) ** 3
    inner = cube[(np.abs(cube - 80) < 40).all(1)]
    entries = kernel_entries_per_row(inner, cube, blur, truncation)
    assert 0.8 * ball < entries < 1.25 * ball
    # a straight line of points: about the cells along a diameter, far fewer
    line = np.column_stack([np.linspace(0, 400, 20_000), np.zeros(20_000), np.zeros(20_000)])
    along = kernel_entries_per_row(line[5000:15000], line, blur, truncation)
    assert 2 * np.sqrt(2 * truncation) / 0.75 - 2 < along < 2 * np.sqrt(2 * truncation) / 0.75 + 4
    assert kernel_entries_per_row(line[:0], line, blur, truncation) == 0.0


def test_kernels_beyond_the_budget_are_refused_before_the_work(monkeypatch):
    rng = np.random.default_rng(1)
    source = PointCloud(rng.uniform(0, 100, (3000, 3)), np.ones(3000))
    target = PointCloud(rng.uniform(0, 100, (3000, 3)), np.ones(3000))
    config = otreg.load_config(
        None,
        ["input.points=0", "output.dense_field=false", "output.jacobian=false", "device=cpu"],
    )

    def no_work(*args, **kwargs):
        raise AssertionError("the rigid step started")

    monkeypatch.setattr(pipeline, "rigid_align", no_work)
    with memory_limit(0.001), pytest.raises(ConfigError) as refused:
        otreg.register(source, target, config)
    message = str(refused.value)
    assert "input.points" in message and "OT kernels" in message and "3000 source points" in message
    assert "would need about" in message and "memory_limit_gb" in message
