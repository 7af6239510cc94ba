"""The registration transform: a rigid matrix followed by displacement fields.

Convention (DESIGN.md): the transform maps SOURCE (moving) space to TARGET (fixed) space;
``phi(x) = x + u(x)`` is where the source point x lands in the target. All in world RAS mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .field import KernelField
from .rigid import apply_matrix

FORMAT = "otreg-transform-1"


class Transform:
    """phi = field_n o ... o field_1 o rigid, with field_k: z -> z + u_k(z).

    Args:
        rigid: (4, 4) matrix, world RAS mm, applied first.
        fields: :class:`KernelField` per non-rigid round; columns 0-2 of their values are the
            displacement (mm), column 3 (if present) the match confidence.
    """

    def __init__(self, rigid: np.ndarray | None = None, fields: list[KernelField] | None = None):
        self.rigid = np.eye(4) if rigid is None else np.asarray(rigid, dtype=np.float64)
        self.fields = list(fields or [])

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) source points (mm, RAS) to the target space; returns (N, 3)."""
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

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """u(x) = phi(x) - x at (N, 3) source points, mm."""
        return self(points) - points

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write ``transform.npz`` (atomically). Reload with :meth:`load`."""
        from ..io.atomic import atomic_path

        arrays = {"format": np.array(FORMAT), "rigid": self.rigid, "n_fields": np.array(len(self.fields))}
        for k, field in enumerate(self.fields):
            arrays.update(field.to_arrays(f"field{k}_"))
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append '.npz' to a name
                np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Transform":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as err:
            raise InputError(path, f"cannot read the transform: {err}") from None
        if str(arrays.get("format", "")) != FORMAT:
            raise InputError(path, f"not an otreg transform (expected format {FORMAT})")
        try:
            fields = [KernelField.from_arrays(arrays, f"field{k}_") for k in range(int(arrays["n_fields"]))]
        except KeyError as err:
            raise InputError(path, f"cannot read the transform: missing {err}") from None
        return cls(arrays["rigid"], fields)
