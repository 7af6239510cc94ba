"""Images as voxel arrays with a voxel -> world RAS affine, for resampling (``otreg warp``).

NIfTI (``.nii``, ``.nii.gz``) through nibabel; NRRD and MetaImage (``.nrrd``, ``.nhdr``,
``.mha``, ``.mhd``) through SimpleITK, whose LPS origin and direction become a RAS affine here.
Arrays are indexed (i, j, k) as the affine is, whichever library read them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .atomic import atomic_path, full_suffix
from .volumes import VOLUME_SUFFIXES

#: formats read and written through SimpleITK
ITK_IMAGE_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: every image format :func:`read_image` reads
IMAGE_SUFFIXES = (*VOLUME_SUFFIXES, *ITK_IMAGE_SUFFIXES)
#: the formats :func:`write_image` writes (one file each: an atomic rename moves all of it)
WRITE_SUFFIXES = (*VOLUME_SUFFIXES, ".nrrd", ".mha")

_FLIP = np.diag([-1.0, -1.0, 1.0])


def is_image(path: str | Path) -> bool:
    return full_suffix(path).lower() in IMAGE_SUFFIXES


def _itk(path: Path) -> bool:
    return full_suffix(path).lower() in ITK_IMAGE_SUFFIXES


def _check(path: Path) -> None:
    if not is_image(path):
        raise InputError(path, f"not an image file (images: {', '.join(IMAGE_SUFFIXES)})")
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "is not a file")


def _sitk_affine(image) -> np.ndarray:
    """The voxel -> RAS affine of a SimpleITK image (LPS origin, direction, spacing)."""
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _FLIP @ direction * np.array(image.GetSpacing())
    affine[:3, 3] = _FLIP @ np.array(image.GetOrigin())
    return affine


def _read_sitk(path: Path, *, header_only: bool):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        if header_only:
            reader.ReadImageInformation()
            return reader
        return reader.Execute()
    except RuntimeError as err:
        message = " ".join(str(err).split())[-200:]
        raise InputError(path, f"is not a readable image: {message}") from None


def image_header(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape (3,), voxel -> RAS affine) of an image file, without reading its voxels.

    Raises:
        InputError: not a readable 3D image.
    """
    path = Path(path)
    _check(path)
    if not _itk(path):
        return _nifti_header(path)
    reader = _read_sitk(path, header_only=True)
    if reader.GetDimension() != 3:
        raise InputError(path, f"is a {reader.GetDimension()}D image; expected a 3D volume")
    return tuple(int(n) for n in reader.GetSize()), _sitk_affine(reader)


def read_image(path: str | Path, volume: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(data (I, J, K), voxel -> RAS affine (4, 4)) of a 3D image file (``volume``: the
    volume of a 4D NIfTI).

    Raises:
        InputError: unreadable, not 3D scalar voxels.
    """
    path = Path(path)
    _check(path)
    if not _itk(path):
        from .volumes import _load_image

        return _load_image(path, volume)
    image = _read_sitk(path, header_only=False)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            path,
            f"has {image.GetDimension()} dimensions and {image.GetNumberOfComponentsPerPixel()} "
            "values per voxel; otreg resamples 3D images of one value per voxel",
        )
    import SimpleITK as sitk

    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (k, j, i) -> (i, j, k)
    return np.ascontiguousarray(data), _sitk_affine(image)


def check_writable(path: str | Path) -> Path:
    """``path`` if :func:`write_image` can write its format; OutputError otherwise."""
    path = Path(path)
    if full_suffix(path).lower() not in WRITE_SUFFIXES:
        from ..errors import OutputError

        raise OutputError(
            f"{path}: images are written as {', '.join(WRITE_SUFFIXES)} (one file each)"
        )
    return path


def write_image(
    path: str | Path, data: np.ndarray, affine: np.ndarray, like: str | Path | None = None
) -> Path:
    """Write (I, J, K) ``data`` with its voxel -> RAS ``affine`` atomically, in the format of
    ``path``'s suffix (NIfTI through nibabel with qform and sform, whose codes are those of
    ``like`` when it is a NIfTI image, else 1 (scanner); NRRD, MetaImage through SimpleITK in
    LPS)."""
    path = check_writable(path)
    with atomic_path(path) as tmp:
        if _itk(path):
            import SimpleITK as sitk

            image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
            axes = _FLIP @ np.asarray(affine, dtype=np.float64)[:3, :3]
            spacing = np.linalg.norm(axes, axis=0)
            image.SetSpacing(tuple(float(v) for v in spacing))
            image.SetDirection(tuple(float(v) for v in (axes / spacing).ravel()))
            image.SetOrigin(tuple(float(v) for v in _FLIP @ affine[:3, 3]))
            sitk.WriteImage(image, str(tmp), useCompression=True)
        else:
            import nibabel as nib

            qform_code = sform_code = 1
            if like is not None and not _itk(Path(like)):  # keep the fixed image's codes
                header: Any = nib.load(str(like)).header
                qform_code = int(header["qform_code"]) or 1
                sform_code = int(header["sform_code"]) or 1
            nifti = nib.Nifti1Image(data, affine)
            nifti.set_qform(affine, qform_code)
            nifti.set_sform(affine, sform_code)
            nifti.header.set_xyzt_units("mm")
            nifti.to_filename(str(tmp))
    return path


def _nifti_header(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape (3,), affine voxel -> RAS) of a NIfTI image's header, without reading its voxels.

    Raises:
        InputError: not a readable NIfTI image, or fewer than 3 dimensions.
    """
    import nibabel as nib

    try:
        image: Any = nib.load(str(path))
    except Exception as err:  # nibabel raises several kinds for a bad header
        message = " ".join(str(err).split())
        raise InputError(path, f"is not a readable NIfTI image: {message}") from None
    if len(image.shape) < 3 or not math.prod(image.shape[:3]):
        raise InputError(path, f"has shape {image.shape}: a reference grid needs a 3D image")
    affine = np.asarray(image.affine, dtype=np.float64)
    if not abs(np.linalg.det(affine[:3, :3])) > 0:
        raise InputError(path, "has a singular affine (zero voxel size): its header is broken")
    return tuple(int(s) for s in image.shape[:3]), affine
