"""NIfTI volumes (.nii, .nii.gz) -> weighted point clouds of selected voxel centres.

Voxels are selected by label values, by an intensity range, or (for a mask or label map) as all
non-zero voxels. Each selected voxel becomes its centre mapped through ``img.affine`` (nibabel's
voxel -> world RAS+ mm matrix, which already resolves sform/qform, obliquity and flips) and
weighs its volume in mm^3, so the cloud's mass is the selected volume.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..limits import check_memory
from ..pointcloud import PointCloud

log = logging.getLogger(__name__)

#: Suffixes read by :func:`read_volume` (lower case; ``.nii.gz`` is one suffix).
VOLUME_SUFFIXES = (".nii", ".nii.gz")

_MAX_LISTED = 20
# a voxel while it is read and selected: its value as float64, a mask byte, the scaled copy
_BYTES_PER_VOXEL = 24

#: what to do with an intensity image given without a selection (register's error message)
HOW_TO_SELECT = (
    "Select the voxels to register: a label map or mask of the lungs instead of the CT "
    "(e.g. from TotalSegmentator or lungmask), or --label L (repeatable; "
    "input.label = [...]) for a label map, or --intensity-range LOW HIGH "
    "(input.intensity_range; e.g. -1000 -400 HU for lung tissue in a CT). "
    "To resample the CT itself once registered, use 'otreg warp OUT CT.nii.gz -o OUT.nii.gz'."
)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _list_values(values: np.ndarray) -> str:
    shown = ", ".join(_fmt(v) for v in values[:_MAX_LISTED])
    more = f" ... ({len(values)} in all)" if len(values) > _MAX_LISTED else ""
    return shown + more


def _load_image(path: Path, volume: int | None):
    """-> (data (I, J, K) array, affine (4, 4)), after choosing the volume of a 4D image."""
    # nibabel reports odd headers as warnings and through its own logger, which prints to
    # stderr: both go to otreg's log (shown with -v), not raw before otreg's one message
    import nibabel  # noqa: F401  (first: importing it adds the printing handler)

    nib_log = logging.getLogger("nibabel.global")
    handlers, propagate = nib_log.handlers[:], nib_log.propagate
    records = _Records()
    nib_log.handlers, nib_log.propagate = [records], False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return _read_image(path, volume)
    finally:
        nib_log.handlers, nib_log.propagate = handlers, propagate
        for text in [*records.messages, *(str(w.message) for w in caught)]:
            log.info("%s: nibabel: %s", path, " ".join(text.split()))


class _Records(logging.Handler):
    """Keeps the messages of the records it is given."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _read_image(path: Path, volume: int | None):
    import nibabel as nib

    try:
        img: Any = nib.load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors ...
        raise InputError(path, f"is not a readable NIfTI image: {_one_line(err)}") from None
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise InputError(
            path,
            "has NaN or Inf in its voxel-to-world affine (sform, qform or pixdim of the header): "
            "its header is broken",
        )
    shape = tuple(int(s) for s in img.shape)
    dtype = img.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise InputError(
            path,
            f"holds {'RGB/vector' if dtype.fields else dtype.name} voxels ({dtype}); otreg reads "
            "one number per voxel (a mask, label map or intensity image)",
        )
    check_memory(
        float(np.prod(shape[:3], dtype=np.float64)) * _BYTES_PER_VOXEL
        + float(np.prod(shape, dtype=np.float64)) * dtype.itemsize,
        f"the {' x '.join(map(str, shape))} voxels it declares",
        source=path,
    )
    # Trailing singleton dimensions (X, Y, Z, 1) carry nothing: treat as 3D.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3:
        raise InputError(path, f"is a {len(shape)}D image of shape {shape}; expected a 3D volume")
    if 0 in shape:
        raise InputError(path, f"has an empty dimension (shape {shape}): no voxels to read")
    if len(shape) > 4:
        raise InputError(
            path, f"is a {len(shape)}D image of shape {shape}; otreg reads 3D or 4D images"
        )
    try:
        if len(shape) == 4:
            n_volumes = shape[3]
            if volume is None:
                raise InputError(
                    path,
                    f"4D image with {n_volumes} volumes: choose one with volume=0..{n_volumes - 1}",
                )
            if not -n_volumes <= volume < n_volumes:
                raise InputError(
                    path, f"volume={volume} is out of range: the image has {n_volumes} volumes"
                )
            data = np.asanyarray(img.dataobj[..., volume]).reshape(shape[:3])
        else:
            if volume not in (None, 0):
                log.debug("%s: 3D image, ignoring volume=%s", path, volume)
            data = np.asanyarray(img.dataobj).reshape(shape)
    except InputError:
        raise
    except Exception as err:  # truncated or corrupt voxel data surfaces only here
        raise InputError(
            path, f"NIfTI voxel data cannot be read (truncated or corrupt file?): {_one_line(err)}"
        ) from None
    return data, affine


def _is_integer_valued(data: np.ndarray) -> bool:
    if data.dtype.kind in "biu":
        return True
    if data.dtype.kind != "f":
        return False
    finite = np.isfinite(data)
    return bool(finite.all() and np.array_equal(data, np.round(data)))


def select_voxels(
    path: Path,
    data: np.ndarray,
    *,
    label: Sequence[int] | None = None,
    intensity_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict]:
    """Boolean mask of the selected voxels of ``data`` and a description of the selection.

    Raises:
        InputError: both selections given, labels absent from the image, a bad range, or an
            intensity image (CT) with no selection.
    """
    if label and intensity_range is not None:
        raise InputError(path, "give label or intensity_range, not both")
    if label:
        wanted = np.unique(np.asarray(list(label), dtype=np.float64))
        present = np.unique(data)
        present = present[present != 0]
        missing = wanted[~np.isin(wanted, present)]
        if len(missing):
            which = "label" if len(missing) == 1 else "labels"
            raise InputError(
                path,
                f"{which} {', '.join(_fmt(m) for m in missing)} not found in the image; "
                f"labels present: {_list_values(present) or 'none (the image is all zero)'}",
            )
        return np.isin(data, wanted), {"label": [int(v) for v in wanted]}
    if intensity_range is not None:
        low, high = (float(v) for v in intensity_range)
        if not low <= high:
            raise InputError(
                path, f"intensity_range=({low:g}, {high:g}) is empty: low must be <= high"
            )
        return (data >= low) & (data <= high), {"intensity_range": [low, high]}
    if not _is_integer_valued(data):
        raise InputError(
            path,
            f"has non-integer values (an intensity image such as a CT, not a mask). {HOW_TO_SELECT}",
        )
    low = data.min()
    if low < 0:
        # Label maps and masks are >= 0; negative values mean Hounsfield units (an int16 CT).
        raise InputError(
            path,
            f"has negative values (down to {_fmt(low)}): it looks like an intensity image (CT), "
            f"not a mask. {HOW_TO_SELECT}",
        )
    return data != 0, {"nonzero": True}


def read_volume(
    path: str | Path,
    *,
    label: Sequence[int] | None = None,
    intensity_range: tuple[float, float] | None = None,
    volume: int | None = None,
) -> PointCloud:
    """Read a NIfTI image as the cloud of its selected voxel centres.

    Args:
        path: .nii or .nii.gz.
        label: keep voxels equal to any of these values. Each must be present in the image.
        intensity_range: keep voxels with ``low <= value <= high`` (inclusive).
        volume: index of the volume of a 4D image (required for those).

    Without ``label`` or ``intensity_range``, the image must be a mask or label map (integer
    values >= 0, possibly stored as floats) and every non-zero voxel is kept.

    Returns:
        Points (N, 3) RAS mm: ``affine @ [i, j, k, 1]`` of each selected voxel (C order of
        (i, j, k)); weights (N,) the voxel volume in mm^3; feature ``intensity`` (N,) the voxel
        values; meta: reader, space "RAS", affine (4, 4), shape, selection, voxel_volume_mm3.
    """
    path = Path(path)
    data, affine = _load_image(path, volume)
    mask, selection = select_voxels(path, data, label=label, intensity_range=intensity_range)
    ijk = np.argwhere(mask)
    if not len(ijk):
        raise InputError(
            path,
            f"no voxel selected ({_describe(selection)}); values in the image range from "
            f"{_fmt(np.nanmin(data))} to {_fmt(np.nanmax(data))}",
        )
    voxel_volume = abs(float(np.linalg.det(affine[:3, :3])))
    if not voxel_volume > 0:
        raise InputError(path, "has a singular affine (zero voxel volume): its header is broken")
    points = ijk @ affine[:3, :3].T + affine[:3, 3]
    log.debug("%s: %d voxels selected (%s)", path, len(points), _describe(selection))
    return PointCloud(
        points=points,
        weights=np.full(len(points), voxel_volume),
        features={"intensity": data[mask].astype(np.float64)},
        source=str(path),
        meta={
            "reader": "nibabel",
            "space": "RAS",
            "affine": affine,
            "shape": tuple(int(s) for s in data.shape),
            "selection": selection,
            "voxel_volume_mm3": voxel_volume,
        },
    )


def _describe(selection: dict) -> str:
    if "label" in selection:
        return "label " + ", ".join(str(v) for v in selection["label"])
    if "intensity_range" in selection:
        low, high = selection["intensity_range"]
        return f"intensity_range=({low:g}, {high:g})"
    return "all non-zero voxels"
