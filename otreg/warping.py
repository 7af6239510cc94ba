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
    from .io import file_suffix, warp_file
    from .io.output_folder import check_output_file
    from .io.volumes import VOLUME_SUFFIXES
    from .transforms import Transform

    output, file = Path(output), Path(file)
    transform_path = transform_file(registration)
    check_output_file(output, overwrite, inputs=(file, transform_path))
    transform = Transform.load(transform_path)
    config = run_config(registration)
    if file_suffix(output) in VOLUME_SUFFIXES:
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
    """Resample the moving NIfTI image ``file`` onto the grid of the NIfTI image ``reference``
    (the fixed one) through ``transform`` and write ``output`` (NIfTI, atomically, the
    reference's affine). See :func:`otreg.transforms.resample.resample_volume`.

    ``interpolation``: "auto" (label for masks and label maps, linear otherwise), "linear"
    (float32 out), "nearest" or "label" (the input's type out).

    Raises:
        InputError: ``file`` or ``reference`` is not a readable NIfTI image, or no reference.
        ConfigError: an unknown interpolation.
    """
    import nibabel as nib

    from .errors import ConfigError, InputError
    from .io import file_suffix
    from .io.atomic import atomic_path
    from .io.volumes import VOLUME_SUFFIXES, _load_image
    from .transforms.grids import nifti_header_grid
    from .transforms.resample import INTERPOLATIONS, choose_interpolation, resample_volume

    file, output = Path(file), Path(output)
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(
            f"interpolation {interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}"
        )
    if file_suffix(file) not in VOLUME_SUFFIXES:
        raise InputError(
            file, f"only a NIfTI image ({', '.join(VOLUME_SUFFIXES)}) can be resampled as an image"
        )
    if reference is None or file_suffix(reference) not in VOLUME_SUFFIXES:
        raise InputError(
            file,
            "no fixed image to resample onto: the registration's target is not a NIfTI image; "
            "pass --reference FIXED.nii.gz",
        )
    shape, reference_affine = nifti_header_grid(reference)
    if not Path(file).is_file():
        raise InputError(file, "no such file")
    data, affine = _load_image(file, volume)
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
    header: Any = nib.load(str(reference)).header
    image = nib.Nifti1Image(warped, reference_affine)
    image.set_qform(reference_affine, int(header["qform_code"]) or 1)
    image.set_sform(reference_affine, int(header["sform_code"]) or 1)
    image.header.set_xyzt_units("mm")
    with atomic_path(output) as tmp:
        image.to_filename(str(tmp))
    return output
