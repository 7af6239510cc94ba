"""The report's pictures, drawn in this process by :mod:`otreg.report.raster` (numpy and
Pillow: no OpenGL, nothing that can crash or hang the run) and encoded as lossless WebP (PNG
where Pillow has no WebP)."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Pictures:
    """What :func:`render_pictures` made.

    Attributes:
        images: name ("overlay", "fields") -> (MIME type, encoded bytes).
        seconds: time spent drawing and encoding.
    """

    images: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    seconds: float = 0.0


def _encoded(picture) -> tuple[str, bytes]:
    """(MIME type, bytes) of a PIL image: lossless WebP at a low effort (method 1: as small
    as the default effort's here, in a third of its time)."""
    from PIL import features

    buffer = io.BytesIO()
    if features.check("webp"):
        picture.save(buffer, format="WEBP", lossless=True, method=1, quality=10)
        return "image/webp", buffer.getvalue()
    picture.save(buffer, format="PNG")  # pragma: no cover  (Pillow's wheels have WebP)
    return "image/png", buffer.getvalue()


def render_pictures(
    source: np.ndarray, target: np.ndarray, warped: np.ndarray, confidence: np.ndarray
) -> Pictures:
    """The overlay and field pictures of a registration.

    Args:
        source: (N, 3) source points, mm world RAS; ``warped``: (N, 3) the same, moved.
        target: (M, 3) target points, mm world RAS.
        confidence: (N,) match confidence of the source points.
    """
    from .raster import draw_fields, draw_overlay

    started = time.perf_counter()
    images = {
        "overlay": _encoded(draw_overlay(source, target, warped)),
        "fields": _encoded(
            draw_fields(source, np.linalg.norm(warped - source, axis=1), confidence)
        ),
    }
    seconds = time.perf_counter() - started
    log.info("report pictures drawn in %.2f s", seconds)
    return Pictures(images, seconds)
