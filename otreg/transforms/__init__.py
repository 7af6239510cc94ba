"""The registration transform: a rigid matrix followed by displacement fields.

Convention (DESIGN.md): the transform maps SOURCE (moving) space to TARGET (fixed) space;
``phi(x) = x + u(x)`` is where the source point x lands in the target. All in world RAS mm.

Every transform here meets one contract (:mod:`otreg.transforms.base`): ``map_points``,
``jacobian``, ``to_arrays`` / ``from_arrays`` and a ``kind``; the field kinds are registered
there, so that :meth:`Transform.load` reads any of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import FIELD_KINDS, DisplacementField, SpatialTransform, field_from_arrays
from .field import KernelField
from .ridge import RidgeField
from .rigid import apply_matrix
from .svf import SVFField

__all__ = [
    "FIELD_KINDS",
    "DisplacementField",
    "KernelField",
    "RidgeField",
    "SVFField",
    "SpatialTransform",
    "Transform",
]

FORMAT = "otreg-transform-1"


class Transform(SpatialTransform):
    """phi = field_n o ... o field_1 o rigid, with field_k: z -> z + u_k(z).

    Args:
        rigid: (4, 4) matrix, world RAS mm, applied first.
        fields: :class:`~otreg.transforms.base.DisplacementField` s applied in order (otreg
            writes one: the fit of its last non-rigid round): :class:`KernelField` (Gaussian
            kernel average), :class:`RidgeField` (kernel ridge regression) or
            :class:`SVFField` (diffeomorphic); called on (N, 3) points they return (N, d):
            columns 0-2 the displacement (mm), column 3 (if present) the match confidence.
    """

    kind = "composite"

    def __init__(
        self,
        rigid: np.ndarray | None = None,
        fields: list[DisplacementField] | None = None,
    ):
        self.rigid = np.eye(4) if rigid is None else np.asarray(rigid, dtype=np.float64)
        self.fields = list(fields or [])

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) source points (mm, RAS) to the target space; returns (N, 3)."""
        return self.apply(points)[0]

    def map_points(self, points: np.ndarray) -> np.ndarray:
        return self.apply(points)[0]

    def apply(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mapped points (N, 3), confidence (N,)) of (N, 3) source points, mm RAS.

        The confidence is the smoothed match confidence of the last round (1 if none).
        """
        moved = apply_matrix(self.rigid, np.asarray(points, dtype=np.float64))
        confidence = np.ones(len(moved))
        for field in self.fields:
            values = field(moved)
            moved = moved + values[:, :3]
            if values.shape[1] > 3:
                confidence = values[:, 3]
        return moved, confidence

    @property
    def invertible(self) -> bool:  # type: ignore[override]  # per instance: from its fields
        """Whether every field knows its inverse (SVF fields: exp(-v)), so :meth:`inverse` works."""
        return all(field.invertible for field in self.fields)

    def inverse(self, points: np.ndarray) -> np.ndarray:
        """phi^-1 at (N, 3) target-space points (mm RAS): rigid^-1 o field_1^-1 o ... o field_n^-1.

        Only for an :attr:`invertible` transform (ValueError otherwise); exact up to the
        discretisation of the fields' inverses (see :mod:`otreg.transforms.svf`).
        """
        if not self.invertible:
            raise ValueError(
                "this transform has fields without an inverse (kernel or ridge fields)"
            )
        z = np.asarray(points, dtype=np.float64)
        for field in reversed(self.fields):
            z = field.inverse(z)
        return apply_matrix(np.linalg.inv(self.rigid), z)

    # ------------------------------------------------------------------ files
    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The arrays of ``transform.npz``: ``format``, ``rigid`` (4, 4), ``n_fields`` and
        each field's arrays under ``field{k}_``."""
        arrays = {
            f"{prefix}format": np.array(FORMAT),
            f"{prefix}rigid": self.rigid,
            f"{prefix}n_fields": np.array(len(self.fields)),
        }
        for k, field in enumerate(self.fields):
            arrays.update(field.to_arrays(f"{prefix}field{k}_"))
        return arrays

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> Transform:
        """The transform of :meth:`to_arrays` (ValueError: not an otreg transform, or an
        unknown field kind; KeyError: a missing array)."""
        if str(arrays.get(f"{prefix}format", "")) != FORMAT:
            raise ValueError(f"not an otreg transform (expected format {FORMAT})")
        fields = [
            field_from_arrays(arrays, f"{prefix}field{k}_")
            for k in range(int(arrays[f"{prefix}n_fields"]))
        ]
        return cls(arrays[f"{prefix}rigid"], fields)

    def save(self, path: str | Path) -> Path:
        """Write ``transform.npz`` (atomically). Reload with :meth:`load`."""
        from ..io.atomic import atomic_path

        path = Path(path)
        # a file object: np.savez would append '.npz' to a name
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **self.to_arrays())  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: str | Path) -> Transform:
        """Read a ``transform.npz`` written by :meth:`save`, checked before it is used.

        Raises:
            InputError: naming the file: not a readable .npz (empty, truncated, another
                format), a format version otreg does not know, missing or misshaped arrays,
                NaN/Inf values, a singular rigid matrix, a non-positive sigma or spacing.
        """
        from ..io._precheck import check_regular_file

        path = Path(path)
        check_regular_file(path)
        arrays = _read_npz(path)
        if str(arrays.get("format", "")) != FORMAT:
            found = str(arrays["format"]) if "format" in arrays else "none"
            raise InputError(
                path, f"not an otreg transform (format {found!r}; this otreg reads {FORMAT})"
            )
        _check_values(path, arrays)
        try:
            n_fields = int(arrays["n_fields"])
            if not 0 <= n_fields <= _MAX_FIELDS:
                raise ValueError(f"n_fields = {n_fields}")
            transform = cls.from_arrays(arrays)
        except KeyError as err:
            raise InputError(path, f"cannot read the transform: missing {err}") from None
        except (ValueError, TypeError, IndexError) as err:
            raise InputError(path, f"cannot read the transform: {err}") from None
        try:  # shapes that disagree between a field's arrays surface only when it is applied
            moved, _ = transform.apply(np.zeros((1, 3)))
        except Exception as err:
            raise InputError(path, f"cannot apply the transform: {err}") from None
        if not np.isfinite(moved).all():
            raise InputError(path, "the transform gives NaN or Inf: the file is corrupt")
        return transform


#: a transform.npz never holds more fields than this (otreg writes one)
_MAX_FIELDS = 64


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, after checking their declared sizes against the memory budget."""
    import zipfile

    from ..limits import check_memory

    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
        check_memory(declared, "its arrays", source=path)
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except InputError:
        raise
    except Exception as err:  # zipfile, zlib, numpy and EOF errors of empty or cut files
        problem = " ".join(str(err).split()) or type(err).__name__
        raise InputError(
            path, f"cannot read the transform (empty, truncated or not an .npz file): {problem}"
        ) from None


def _check_values(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Finite numbers everywhere, a usable rigid matrix, positive sigmas and spacings."""
    for key, value in arrays.items():
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise InputError(path, f"array {key!r} holds NaN or Inf values: the file is corrupt")
        if key.endswith(("sigma", "sigmas", "spacing")) and not (value > 0).all():
            raise InputError(path, f"array {key!r} must be > 0, got {value.ravel()[:3]}")
    rigid = arrays.get("rigid")
    if rigid is None or rigid.shape != (4, 4) or rigid.dtype.kind not in "fiu":
        shape = None if rigid is None else rigid.shape
        raise InputError(path, f"the rigid matrix must be 4 x 4 numbers, got shape {shape}")
    if not np.allclose(rigid[3], [0, 0, 0, 1]) or abs(np.linalg.det(rigid[:3, :3])) < 1e-12:
        raise InputError(path, "the rigid matrix is not an invertible affine matrix")
