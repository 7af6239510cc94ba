"""The contract that every spatial transform of otreg meets, and the registry of field kinds.

As deepali's ``spatial/base.py`` does for its transforms, one base class says what a transform
is: a map of (N, 3) points, mm, world RAS, to (N, 3) points in the same frame
(:meth:`SpatialTransform.map_points`), its Jacobian (N, 3, 3), its arrays for a file
(:meth:`~SpatialTransform.to_arrays`, :meth:`~SpatialTransform.from_arrays`) and a ``kind``
that names it in that file. :class:`DisplacementField` adds what the fields share (z -> z + u(z),
with optional extra channels such as the match confidence), and each field class registers its
kind on definition, so that :func:`field_from_arrays` reads any of them back.

Frames: points are world RAS mm in and out; source (moving) space maps to target (fixed) space.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar, TypeVar

import numpy as np

_T = TypeVar("_T", bound="SpatialTransform")

#: field classes by the ``kind`` stored in transform.npz (see :func:`field_from_arrays`)
FIELD_KINDS: dict[str, type[DisplacementField]] = {}

#: the kind of a field stored without one: files written before kinds existed held kernel fields
LEGACY_FIELD_KIND = "kernel"


class SpatialTransform(ABC):
    """A map phi of world RAS points (mm) to world RAS points (mm).

    Subclasses define ``kind`` (the name stored in files), :meth:`map_points`,
    :meth:`to_arrays` and :meth:`from_arrays`; an ``invertible`` one also :meth:`inverse`.
    """

    kind: ClassVar[str]
    #: whether :meth:`inverse` is defined (its own inverse, not a numerical search)
    invertible: ClassVar[bool] = False

    @abstractmethod
    def map_points(self, points: np.ndarray) -> np.ndarray:
        """phi at (N, 3) points (mm, RAS): (N, 3) float64 mapped points, mm, RAS."""

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """u(x) = phi(x) - x at (N, 3) points, mm: (N, 3)."""
        points = np.asarray(points, dtype=np.float64)
        return self.map_points(points) - points

    def jacobian(self, points: np.ndarray, step: float | None = None) -> np.ndarray:
        """(N, 3, 3) D phi at (N, 3) points (unitless): J[n, r, c] = d phi_r / d x_c.

        Central differences of :meth:`map_points` with step ``step`` mm (default
        :attr:`jacobian_step`): column c = (phi(x + h e_c) - phi(x - h e_c)) / 2h, all probes
        in one call.
        """
        x = np.asarray(points, dtype=np.float64)
        h = self.jacobian_step if step is None else float(step)
        offsets = np.concatenate([np.eye(3), -np.eye(3)]) * h  # +e0 +e1 +e2 -e0 -e1 -e2
        probes = (x[None, :, :] + offsets[:, None, :]).reshape(-1, 3)
        mapped = self.map_points(probes).reshape(6, len(x), 3)
        columns = (mapped[:3] - mapped[3:]) / (2 * h)  # (3 = column c, N, 3 = row r)
        return np.transpose(columns, (1, 2, 0))

    @property
    def jacobian_step(self) -> float:
        """Default finite-difference step of :meth:`jacobian`, mm: small against the scale
        on which the transform varies."""
        return 0.1

    def inverse(self, points: np.ndarray) -> np.ndarray:
        """phi^-1 at (N, 3) target-space points (mm, RAS); only where :attr:`invertible`."""
        raise NotImplementedError(f"a {self.kind!r} transform has no inverse of its own")

    @abstractmethod
    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The arrays that :meth:`from_arrays` reads back, their names starting with
        ``prefix`` (several transforms share one .npz file)."""

    @classmethod
    @abstractmethod
    def from_arrays(cls: type[_T], arrays: Mapping[str, np.ndarray], prefix: str = "") -> _T:
        """The transform that :meth:`to_arrays` wrote under ``prefix``.

        Raises:
            KeyError: an array is missing; ValueError: an array has the wrong shape.
        """


class DisplacementField(SpatialTransform):
    """z -> z + u(z), u a smooth displacement (mm) defined at any point, possibly with extra
    channels (otreg puts the smoothed match confidence there).

    Calling the field gives its values: (N, 3 + k), columns 0-2 u (mm), then the k extra
    channels. Subclasses that set ``kind`` are registered in :data:`FIELD_KINDS`.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is not None:
            if kind in FIELD_KINDS and FIELD_KINDS[kind] is not cls:
                raise TypeError(f"field kind {kind!r} is taken by {FIELD_KINDS[kind].__name__}")
            FIELD_KINDS[kind] = cls

    @abstractmethod
    def __call__(self, points: np.ndarray) -> np.ndarray:
        """(N, 3 + k) values at (N, 3) points (mm, RAS): u (mm), then the extra channels."""

    def map_points(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        return points + self(points)[:, :3]

    def displacement(self, points: np.ndarray) -> np.ndarray:
        return self(np.asarray(points, dtype=np.float64))[:, :3]

    def approximate_inverse(self, points: np.ndarray) -> np.ndarray:
        """A start for inverting the field at (N, 3) target-side points (mm, RAS): the exact
        inverse where :attr:`invertible`; other fields regress -u at their moved controls."""
        if self.invertible:
            return self.inverse(points)
        raise NotImplementedError(f"a {self.kind!r} field has no approximate inverse")


def field_from_arrays(arrays: Mapping[str, np.ndarray], prefix: str) -> DisplacementField:
    """The field stored under ``prefix`` in ``arrays``, by its ``{prefix}kind`` (none: a
    kernel field, as files written before kinds existed hold).

    Raises:
        ValueError: an unknown kind (a newer otreg may have written it); KeyError: an array
            of the field is missing.
    """
    kind = str(arrays.get(f"{prefix}kind", LEGACY_FIELD_KIND))
    if kind not in FIELD_KINDS:
        raise ValueError(
            f"unknown field kind {kind!r} in {prefix}kind (known: {', '.join(FIELD_KINDS)}); "
            "a newer otreg may have written it"
        )
    return FIELD_KINDS[kind].from_arrays(arrays, prefix)
