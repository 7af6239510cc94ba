"""Feature-augmented matching cost (``match.feature_weights``): point arrays as extra cost
columns, in mm per unit of the array."""

from __future__ import annotations

import numpy as np
import pytest

from otreg.config import SolverConfig
from otreg.errors import InputError
from otreg.pointcloud import PointCloud
from otreg.stages.match import feature_columns, match


def line(y: float, radius: float, n: int = 60) -> PointCloud:
    """n points along x (0-60 mm) at height y, with a constant 'radius' array (mm)."""
    points = np.column_stack([np.linspace(0, 60, n), np.full(n, y), np.zeros(n)])
    return PointCloud(points, np.ones(n), {"radius": np.full(n, radius)}, source=f"line y={y}")


def test_features_pair_points_with_their_kind():
    """A thin vessel (radius 1 mm) at y = 0 with two candidates: a thick one (radius 3 mm)
    1 mm away and a thin one 3 mm away. Geometry alone picks the near thick vessel; with
    1 mm of radius counting as 2 mm of distance the thin one costs less (3 mm vs
    sqrt(1 + 4^2) mm)."""
    source = line(0.0, 1.0)
    thick, thin = line(-1.0, 3.0), line(3.0, 1.0)
    target = PointCloud(
        np.vstack([thick.points, thin.points]),
        np.ones(120),
        {"radius": np.concatenate([thick.features["radius"], thin.features["radius"]])},
    )
    common = dict(blur=0.5, reach=1.0, solver=SolverConfig())  # local: each line may take all
    plain = match(source.points, source.weights, target.points, target.weights, **common)
    weights = {"radius": 2.0}
    featured = match(
        source.points,
        source.weights,
        target.points,
        target.weights,
        **common,
        source_features=feature_columns(source, weights),
        target_features=feature_columns(target, weights),
    )
    assert featured.targets.shape == (60, 3)
    assert np.median(plain.targets[:, 1]) < -0.5
    assert np.median(featured.targets[:, 1]) > 2.5


def test_feature_columns_scale_and_errors():
    cloud = line(0.0, 1.5)
    assert feature_columns(cloud, {}) is None
    np.testing.assert_allclose(feature_columns(cloud, {"radius": 2.0}), np.full((60, 1), 3.0))
    with pytest.raises(InputError, match=r"line y=0.0: has no point array 'intensity'.*'radius'"):
        feature_columns(cloud, {"intensity": 1.0})
    cloud.features["radius"][5] = np.nan
    with pytest.raises(InputError, match="'radius' has NaN"):
        feature_columns(cloud, {"radius": 1.0})
