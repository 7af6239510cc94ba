"""The smoothing fields' Gaussian averages over nearby controls (compiled) against dense ones."""

from __future__ import annotations

import numpy as np
import pytest

from otreg import native
from otreg.metrics import nearest_distances
from otreg.native import gaussian_average
from otreg.transforms.field import KernelField

pytestmark = pytest.mark.skipif(
    not native.available(), reason="otreg's compiled kernels are not built (pip install -e .)"
)


@pytest.mark.parametrize(
    "entries", [None, 50_000]
)  # one compiled call; many (the first of 16 queries)
def test_kernel_field_over_nearby_controls_equals_the_dense_average(monkeypatch, entries):
    rng = np.random.default_rng(0)
    controls = rng.uniform(0, 200, (3000, 3))
    values = rng.normal(0, 10, (3000, 4))  # displacements of ~10 mm and a confidence column
    weights = rng.uniform(0.1, 1, 3000)
    weights[:30] = 0  # controls that do not count
    field = KernelField(controls, values, weights, 8.0)
    if entries:
        monkeypatch.setattr(gaussian_average, "_ENTRIES", entries)
    # inside, around, and far from the controls (where the nearest ones' values repeat)
    points = np.concatenate([rng.uniform(-40, 240, (4000, 3)), [[900.0, -700.0, 50.0]]])
    near = field(points)
    monkeypatch.setattr(gaussian_average, "available", lambda *tensors: False)
    dense = field(points)
    # mm, for values up to ~40 mm: the dense float32 logits round at ~2e-5 (measured 1.0e-3)
    assert np.abs(near - dense).max() < 2e-3


def test_nearest_distances_are_exact():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 300, (2000, 3))
    y = np.concatenate([rng.uniform(0, 300, (2500, 3)), x[:7]])  # some points in both
    brute = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)).min(1)
    d = nearest_distances(x, y)
    assert np.array_equal(d[:7], np.zeros(7)) and np.allclose(d, brute, rtol=0, atol=1e-9)
