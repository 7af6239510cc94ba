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
    reference: str | Path | None = None,
    interpolation: Literal["auto", "linear", "nearest", "label"] = "auto",
) -> Path:
    """Write ``output``: ``file`` (points, mesh, NIfTI image or selection, landmarks in source
    space) moved to the target by the registration in the folder ``registration``.

    The output format follows ``output``'s suffix (:func:`otreg.io.warp_file`); landmarks in
    DIR-LAB voxel indices (``landmark_format="dirlab"`` with ``spacing``) come out in mm.
    A NIfTI ``file`` written as ``.nii``/``.nii.gz`` is resampled as an image
    (:func:`warp_image`) on the grid of ``reference`` (default: the run's target, when it is a
    NIfTI image) with ``interpolation``. NIfTI selections read as points use the run's
    ``[input]`` settings unless ``load_kwargs`` are given.

    Raises:
        OutputError: ``output`` exists and ``overwrite`` is False, or is ``file`` itself;
        InputError: unreadable inputs.
    """
    from .evaluation import recorded_input, run_config, transform_file
    from .io import warp_file
    from .io.images import is_image
    from .io.output_folder import check_output_file
    from .transforms import Transform

    output, file = Path(output), Path(file)
    transform_path = transform_file(registration)
    check_output_file(output, overwrite, inputs=(file, transform_path))
    transform = Transform.load(transform_path)
    config = run_config(registration)
    if is_image(output):
        return warp_image(
            transform,
            file,
            output,
            reference=reference
            if reference is not None
            else recorded_input(registration, "target"),
            interpolation=interpolation,
            grid_spacing=config.output.grid_spacing,
            volume=config.input.volume,
        )
    if load_kwargs is None:
        from .io import load_options

        load_kwargs = load_options(config.input)
    return warp_file(
        file,
        output,
        point_mapping(transform),
        landmark_format=landmark_format,
        spacing=spacing,
        load_kwargs=load_kwargs,
    )


def warp_image(
    transform,
    file: str | Path,
    output: str | Path,
    *,
    reference: str | Path | None,
    interpolation: str = "auto",
    grid_spacing: float = 4.0,
    volume: int | None = None,
) -> Path:
    """Resample the moving image ``file`` onto the grid of the image ``reference`` (the fixed
    one) through ``transform`` and write ``output`` atomically, with the reference's grid.
    Images: NIfTI, NRRD or MetaImage (:mod:`otreg.io.images`). See
    :func:`otreg.transforms.resample.resample_volume`.

    ``interpolation``: "auto" (label for masks and label maps, linear otherwise), "linear"
    (float32 out), "nearest" or "label" (the input's type out).

    Raises:
        InputError: ``file`` or ``reference`` is not a readable image, or no reference.
        ConfigError: an unknown interpolation. OutputError: an output format otreg cannot write.
    """
    from .errors import ConfigError, InputError
    from .io.images import (
        IMAGE_SUFFIXES,
        check_writable,
        image_header,
        is_image,
        read_image,
        write_image,
    )
    from .transforms.resample import INTERPOLATIONS, choose_interpolation, resample_volume

    file, output = Path(file), check_writable(output)
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(
            f"interpolation {interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}"
        )
    if not is_image(file):
        raise InputError(
            file, f"only an image ({', '.join(IMAGE_SUFFIXES)}) can be resampled as an image"
        )
    if reference is None or not is_image(reference):
        raise InputError(
            file,
            "no fixed image to resample onto: the registration's target is not an image; "
            "pass --reference FIXED.nii.gz",
        )
    shape, reference_affine = image_header(reference)
    data, affine = read_image(file, volume)
    mode = choose_interpolation(data, interpolation)
    warped = resample_volume(
        data,
        affine,
        shape,
        reference_affine,
        transform,
        interpolation=mode,
        grid_spacing=grid_spacing,
    )
    return write_image(output, warped, reference_affine, like=reference)
