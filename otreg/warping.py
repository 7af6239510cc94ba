"""warp(): move a file of source (moving) space into target (fixed) space with a registration."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np


def point_mapping(transform) -> Callable[[np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]:
    """The :func:`otreg.io.warp_file` mapping of a transform: (N, 3) RAS points -> (moved
    points, {"displacement": (N, 3) mm, "confidence": (N,)})."""

    def mapping(points: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        moved, confidence = transform.apply(points)
        return moved, {"displacement": moved - points, "confidence": confidence}

    return mapping


def warp(
    registration: str | Path,
    file: str | Path,
    output: str | Path,
    *,
    landmark_format: Literal["mm", "dirlab"] = "mm",
    spacing: Sequence[float] | None = None,
    overwrite: bool = False,
    load_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write ``output``: ``file`` (points, mesh, NIfTI selection or landmarks in source space)
    moved to the target by the registration in the folder ``registration``.

    The output format follows ``output``'s suffix (:func:`otreg.io.warp_file`); landmarks in
    DIR-LAB voxel indices (``landmark_format="dirlab"`` with ``spacing``) come out in mm.

    Raises:
        OutputError: ``output`` exists and ``overwrite`` is False; InputError: unreadable inputs.
    """
    from .evaluation import transform_file
    from .io import warp_file
    from .io.output_folder import check_output_file
    from .transforms import Transform

    output = Path(output)
    transform_path = transform_file(registration)
    check_output_file(output, overwrite, inputs=(file, transform_path))
    transform = Transform.load(transform_path)
    return warp_file(
        file,
        output,
        point_mapping(transform),
        landmark_format=landmark_format,
        spacing=spacing,
        load_kwargs=load_kwargs,
    )
