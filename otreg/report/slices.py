"""For image inputs: slices of the fixed image fused with the moving image, before and after.

The moving image is resampled onto a coronal and an axial plane of the fixed image's world box
through the transform's inverse (:func:`otreg.transforms.itk.inverse_points`, as the dense
fixed -> moving field), linearly. Fused in false colour: fixed green, moving magenta; where
they agree the picture is grey, where they do not it is green or magenta. Drawn with Pillow,
no OpenGL, in this process.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: the inverse transform is computed at every COARSE-th pixel of a plane, bilinear in between
COARSE = 4


def is_image(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _image(path: Path, volume: int | None) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    image: Any = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4:
        data = data[..., volume or 0]
    return np.squeeze(data), image.affine


def _plane(
    view: str, centre: np.ndarray, low: np.ndarray, high: np.ndarray, pixels: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """World RAS points (rows x columns, 3) of a plane through ``centre``: radiological
    (patient's right on the left), superior / anterior up."""
    step = float(max(high - low)) / pixels
    xs = np.arange(high[0], low[0], -step)  # columns: patient's right (+x) to left
    if view == "coronal":
        rows = np.arange(high[2], low[2], -step)  # superior to inferior
        grid = np.stack(np.meshgrid(xs, [centre[1]], rows, indexing="ij"), axis=-1)[:, 0]
        grid = grid.transpose(1, 0, 2)
    else:  # axial, seen from the feet: anterior up
        rows = np.arange(high[1], low[1], -step)
        grid = np.stack(np.meshgrid(xs, rows, [centre[2]], indexing="ij"), axis=-1)[..., 0, :]
        grid = grid.transpose(1, 0, 2)
    return grid.reshape(-1, 3), grid.shape[:2]


def _coarse_inverse(
    transform, y: np.ndarray, shape: tuple[int, int], every: int = COARSE
) -> np.ndarray:
    """phi^-1 at the (rows * columns, 3) plane points ``y``: computed at every ``every``-th
    row and column (the transform is smooth at that scale), bilinear in between."""
    from scipy.ndimage import map_coordinates

    from ..transforms.itk import inverse_points

    grid = y.reshape(*shape, 3)
    rows = np.unique(np.r_[np.arange(0, shape[0], every), shape[0] - 1])
    columns = np.unique(np.r_[np.arange(0, shape[1], every), shape[1] - 1])
    coarse = inverse_points(transform, grid[np.ix_(rows, columns)].reshape(-1, 3))[0]
    coarse = coarse.reshape(len(rows), len(columns), 3)
    # fractional coarse indices of every pixel (the coarse nodes are evenly spaced but the last)
    r = np.interp(np.arange(shape[0]), rows, np.arange(len(rows)))
    c = np.interp(np.arange(shape[1]), columns, np.arange(len(columns)))
    rr, cc = np.meshgrid(r, c, indexing="ij")
    return np.stack(
        [map_coordinates(coarse[..., k], [rr, cc], order=1, mode="nearest") for k in range(3)],
        axis=-1,
    ).reshape(-1, 3)


def _sample(data: np.ndarray, affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    ijk = (points - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    return map_coordinates(data, ijk.T, order=1, mode="constant", cval=np.nan)


def _unit(values: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Values scaled to [0, 1] by the image's 1st-99.5th percentiles (outside: 0)."""
    sample = data.ravel()[:: max(1, data.size // 200_000)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    low, high = np.percentile(sample, [1, 99.5]) if len(sample) else (0.0, 1.0)
    if high <= low:
        low, high = float(sample.min()), float(sample.max()) or 1.0
    scaled = np.clip((values - low) / max(high - low, 1e-12), 0, 1)
    return np.nan_to_num(scaled, nan=0.0)


def fused_planes(
    source_path: str | Path,
    target_path: str | Path,
    transform,
    centre: np.ndarray,
    *,
    volume: int | None = None,
    pixels: int = 320,
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """{(when, view): (fixed, moving)}: the two images on the same plane as (rows, columns)
    arrays in [0, 1], for when "before" / "after" and view "coronal" / "axial"; planes through
    ``centre`` (mm RAS) over the fixed image's world box, ``pixels`` columns or rows at most.
    ``volume``: index of a 4D image's volume."""
    moving, moving_affine = _image(Path(source_path), volume)
    fixed, fixed_affine = _image(Path(target_path), volume)
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in fixed.shape[:3]], indexing="ij"))
    world = corners.reshape(3, -1).T @ fixed_affine[:3, :3].T + fixed_affine[:3, 3]
    low, high = world.min(axis=0), world.max(axis=0)
    planes = {}
    for view in ("coronal", "axial"):
        y, shape = _plane(view, np.asarray(centre, dtype=np.float64), low, high, pixels)
        f = _unit(_sample(fixed, fixed_affine, y), fixed).reshape(shape)
        for when in ("before", "after"):
            x = y if when == "before" else _coarse_inverse(transform, y, shape)
            planes[when, view] = (
                f,
                _unit(_sample(moving, moving_affine, x), moving).reshape(shape),
            )
    return planes


def fused_slices(planes: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> tuple[str, bytes]:
    """One picture (MIME type, PNG bytes) of :func:`fused_planes`' planes: fixed green,
    moving magenta; before (top row) and after (bottom row), coronal (left) and axial (right)."""
    from PIL import Image, ImageDraw

    rows = []
    for when in ("before", "after"):
        row = []
        for view in ("coronal", "axial"):
            f, m = planes[when, view]
            rgb = (np.stack([m, f, m], axis=-1) * 255).astype(np.uint8)
            panel = Image.fromarray(rgb)
            draw = ImageDraw.Draw(panel)
            draw.text((4, 3), f"{when}, {view}", fill=(255, 255, 0))
            top, bottom = ("S", "I") if view == "coronal" else ("A", "P")
            w, h = panel.size
            for text, xy in (
                ("R", (4, h // 2)),
                ("L", (w - 10, h // 2)),
                (top, (w // 2, 3)),
                (bottom, (w // 2, h - 13)),
            ):
                draw.text(xy, text, fill=(255, 255, 0))
            row.append(panel)
        rows.append(row)
    width = sum(p.size[0] for p in rows[0]) + 4
    height = sum(max(p.size[1] for p in row) for row in rows) + 4
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    y0 = 0
    for row in rows:
        x0 = 0
        for panel in row:
            canvas.paste(panel, (x0, y0))
            x0 += panel.size[0] + 4
        y0 += max(p.size[1] for p in row) + 4
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return "image/png", buffer.getvalue()
