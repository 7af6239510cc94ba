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
        """Read a ``transform.npz`` (any version otreg wrote: fields without a kind are
        kernel fields).

        Raises:
            InputError: naming the file, when it cannot be read or is not an otreg transform.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as err:
            raise InputError(path, f"cannot read the transform: {err}") from None
        if str(arrays.get("format", "")) != FORMAT:
            raise InputError(path, f"not an otreg transform (expected format {FORMAT})")
        try:
            return cls.from_arrays(arrays)
        except KeyError as err:
            raise InputError(path, f"cannot read the transform: missing {err}") from None
        except ValueError as err:
            raise InputError(path, f"cannot read the transform: {err}") from None
