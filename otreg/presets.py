"""The packaged preset that suits an input: ``otreg register`` without ``-c`` uses it.

| input | preset |
|---|---|
| NIfTI mask or label map | ``lung_mask`` |
| surface mesh (has 2D cells, e.g. triangles) | ``lung_surface`` |
| vessel cloud with a ``radius`` point array (in both clouds) | ``lung_vessels`` |
| anything else: point lists, clouds without radius | ``lung_points`` |
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .pointcloud import PointCloud

PRESET_BY_KIND = {
    "mask": "lung_mask",
    "surface": "lung_surface",
    "vessels": "lung_vessels",
    "points": "lung_points",
}

_DESCRIPTION = {
    "mask": "NIfTI mask or volume",
    "surface": "surface mesh",
    "vessels": "vessel clouds with a 'radius' array",
    "points": "point clouds without a 'radius' array",
}


def input_kind(cloud: PointCloud) -> str:
    """'mask', 'surface', 'vessels' or 'points' for a cloud loaded by :func:`otreg.load`."""
    if cloud.meta.get("reader") == "nibabel":
        return "mask"
    if cloud.meta.get("surface"):
        return "surface"
    if "radius" not in cloud.features:
        return "points"
    radius = np.asarray(cloud.features["radius"])
    if radius.ndim > 1 and radius.reshape(len(radius), -1).shape[1] != 1:
        raise InputError(
            cloud.source,
            f"point array 'radius' has {radius.reshape(len(radius), -1).shape[1]} components; a "
            "vessel radius has one value per point (rename the array, or choose a config with -c)",
        )
    return "vessels"


def preset_for(source: PointCloud, target: PointCloud) -> tuple[str, str]:
    """(preset name, why) for a source/target pair: the source's kind decides, except that
    ``lung_vessels`` (which matches on the radius) needs the array in both clouds."""
    kind = input_kind(source)
    if kind == "vessels" and "radius" not in target.features:
        kind = "points"
    return PRESET_BY_KIND[kind], f"input type: {_DESCRIPTION[kind]}"
