"""The report's pictures of the clouds, drawn with numpy and Pillow: no OpenGL, no VTK.

Parallel projections seen from the patient's front (coronal) and from the feet (axial), in
the radiological convention (the patient's right on the viewer's left): ``overlay`` (2 x 2
panels: the source before and after, each over the target) and ``fields`` (1 x 2: the source
coloured by its displacement and by its match confidence). Every point is a small square dot,
as a scatter plot draws it; the clouds are drawn in order, the target first.
"""

from __future__ import annotations

from functools import cache

import numpy as np

#: colours of the clouds in the pictures (and in the page's legend)
SOURCE_COLOUR, TARGET_COLOUR = "#d55e00", "#0072b2"
PANEL = 480  # pixels per panel side
OPACITY = 0.7  # of the clouds in the overlay, where they cover each other
# name: ((RAS axis to the right, its sign), (RAS axis upwards, its sign), letters at the left,
# right, top and bottom edges). RAS +x is the patient's right: it points to the viewer's left.
VIEWS = {
    "coronal": ((0, -1.0), (2, 1.0), ("R", "L", "S", "I")),
    "axial": ((0, -1.0), (1, 1.0), ("R", "L", "A", "P")),
}
LETTER_SIZE, TITLE_SIZE, SMALL_SIZE = 22, 18, 12  # font pixels
_BACKGROUND, _INK, _RULE = (255, 255, 255), (0, 0, 0), (190, 190, 190)
# 33 evenly spaced samples of matplotlib's colour maps, interpolated linearly between them
_MAPS = {
    "viridis": "440154470d6048186a482374472d7b4537814240863e49893b528b375b8d33638d2f6b8e2c728e"
    "297a8e26828e23898e21918c1f988b1fa08822a78528ae8032b67a3fbc734ec36b5ec96270cf5784d44b98d8"
    "3eaddc30c2df23d8e219ece51bfde725",
    "magma": "0000040303120a0822130d341d114729115a36106b440f7651127c5d177f6a1c81762181832681902a"
    "819c2e7faa337db73779c43c75d0416fdc4869e75263ef5d5ef56b5cf9795dfc8961fd9869fea772feb67cfe"
    "c488fed395fde2a3fcf0b2fcfdbf",
}


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[k : k + 2], 16) for k in (1, 3, 5)], dtype=np.float64)


def colour_map(name: str, values: np.ndarray) -> np.ndarray:
    """(N,) values in [0, 1] -> (N, 3) RGB in [0, 255] of the colour map ``name``."""
    table = np.frombuffer(bytes.fromhex(_MAPS[name]), dtype=np.uint8).reshape(-1, 3)
    knots = np.linspace(0.0, 1.0, len(table))
    t = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    return np.stack([np.interp(t, knots, table[:, c]) for c in range(3)], axis=1)


@cache
def _font(size: int):
    from PIL import ImageFont, features

    if features.check("freetype2"):  # Pillow's own font at that size
        return ImageFont.load_default(size=size)
    return ImageFont.load_default()  # pragma: no cover  (Pillow's wheels have FreeType)


class _Panel:
    """One panel of a picture: the pixels of ``image`` ((H, W, 3) float32) at ``origin``, mm
    mapped to pixels so that ``bounds`` ((2, 3) min / max, mm RAS) fits with a margin."""

    def __init__(self, image: np.ndarray, origin: tuple[int, int], view: str, bounds: np.ndarray):
        self.image, self.origin, self.view = image, origin, view
        (self.across, self.across_sign), (self.up, self.up_sign), self.letters = VIEWS[view]
        extent = bounds[1] - bounds[0]
        self.centre = bounds.mean(axis=0)
        self.scale = PANEL / (1.2 * max(extent[self.across], extent[self.up], 1.0))  # px / mm

    def pixels(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Column and row (ints, in the whole image) of (N, 3) points mm RAS."""
        d = points - self.centre
        column = PANEL / 2 + self.across_sign * d[:, self.across] * self.scale
        row = PANEL / 2 - self.up_sign * d[:, self.up] * self.scale
        return (
            np.floor(column).astype(np.int64) + self.origin[0],
            np.floor(row).astype(np.int64) + self.origin[1],
        )

    def dots(self, points: np.ndarray, colours: np.ndarray, size: int, opacity: float) -> None:
        """Square dots of ``size`` pixels at (N, 3) ``points``, (N, 3) or (3,) RGB ``colours``,
        in order (a later dot over an earlier one); ``opacity`` < 1 blends each cloud over
        the panel once where it covers it."""
        finite = np.isfinite(points).all(axis=1)
        colours = np.broadcast_to(colours, points.shape)[finite]
        column, row = self.pixels(points[finite])
        x0, y0 = self.origin
        rows, columns, values = [], [], []
        for dy in range(size):
            for dx in range(size):
                c, r = column + dx, row + dy
                inside = (c >= x0) & (c < x0 + PANEL) & (r >= y0) & (r < y0 + PANEL)
                rows.append(r[inside])
                columns.append(c[inside])
                values.append(colours[inside])
        r, c, v = np.concatenate(rows), np.concatenate(columns), np.concatenate(values)
        if opacity >= 1.0:
            self.image[r, c] = v
            return
        pixels = self.image[y0 : y0 + PANEL, x0 : x0 + PANEL]
        layer = np.zeros((PANEL, PANEL), dtype=bool)
        colour = np.zeros_like(pixels)
        layer[r - y0, c - x0], colour[r - y0, c - x0] = True, v
        pixels[layer] += opacity * (colour[layer] - pixels[layer])


def _canvas(columns: int, rows: int) -> np.ndarray:
    image = np.empty((rows * PANEL, columns * PANEL, 3), dtype=np.float32)
    image[:] = _BACKGROUND
    return image


def _finish(image: np.ndarray, panels: list[_Panel], titles: list[str]):
    """The PIL image: rules between the panels, each panel's title and edge letters."""
    from PIL import Image, ImageDraw

    for x in range(PANEL, image.shape[1], PANEL):
        image[:, x - 1 : x + 1] = _RULE
    for y in range(PANEL, image.shape[0], PANEL):
        image[y - 1 : y + 1, :] = _RULE
    # the dots blend colours in [0, 255]: no clipping needed
    picture = Image.fromarray(np.rint(image, out=image).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for panel, title in zip(panels, titles):
        x0, y0 = panel.origin
        draw.text((x0 + 6, y0 + 4), title, fill=_INK, font=_font(TITLE_SIZE), anchor="la")
        left, right, top, bottom = panel.letters
        letter = _font(LETTER_SIZE)
        draw.text((x0 + 10, y0 + PANEL // 2), left, fill=_INK, font=letter, anchor="lm")
        draw.text((x0 + PANEL - 10, y0 + PANEL // 2), right, fill=_INK, font=letter, anchor="rm")
        draw.text((x0 + PANEL // 2, y0 + 4), top, fill=_INK, font=letter, anchor="ma")
        draw.text((x0 + PANEL // 2, y0 + PANEL - 6), bottom, fill=_INK, font=letter, anchor="md")
    return picture, draw


def _bounds(*clouds: np.ndarray) -> np.ndarray:
    """(2, 3) min / max over the finite points of the clouds (a unit box where none is)."""
    points = np.concatenate([c[np.isfinite(c).all(axis=1)] for c in clouds])
    if not len(points):
        return np.array([[0.0] * 3, [1.0] * 3])
    return np.stack([points.min(axis=0), points.max(axis=0)])


def draw_overlay(source: np.ndarray, target: np.ndarray, warped: np.ndarray):
    """The source before (top row) and after (bottom row) the registration over the target,
    coronal and axial. (N, 3), (M, 3), (N, 3) mm RAS -> a PIL image, 960 x 960 pixels."""
    bounds = _bounds(source, target, warped)
    image = _canvas(2, 2)
    panels, titles = [], []
    target_rgb, source_rgb = _rgb(TARGET_COLOUR), _rgb(SOURCE_COLOUR)
    for row, (moving, when) in enumerate(((source, "before"), (warped, "after"))):
        for column, view in enumerate(VIEWS):
            panel = _Panel(image, (column * PANEL, row * PANEL), view, bounds)
            panel.dots(target, target_rgb, 2, OPACITY)
            panel.dots(moving, source_rgb, 2, OPACITY)
            panels.append(panel)
            titles.append(f"{when}, {view}")
    return _finish(image, panels, titles)[0]


def draw_fields(source: np.ndarray, displacement_mm: np.ndarray, confidence: np.ndarray):
    """The source, coronal, coloured by its displacement (mm, viridis over its range) and by
    its match confidence (magma over [0, 1]), each with a colour bar. (N, 3) mm RAS, (N,),
    (N,) -> a PIL image, 960 x 480 pixels."""
    bounds = _bounds(source)
    image = _canvas(2, 1)
    finite = displacement_mm[np.isfinite(displacement_mm)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    layers = (
        ("displacement (mm)", "viridis", displacement_mm, (low, high)),
        ("match confidence", "magma", confidence, (0.0, 1.0)),
    )
    panels = []
    for column, (_, name, values, (lo, hi)) in enumerate(layers):
        panel = _Panel(image, (column * PANEL, 0), "coronal", bounds)
        panel.dots(source, colour_map(name, (values - lo) / max(hi - lo, 1e-12)), 3, 1.0)
        panels.append(panel)
    picture, draw = _finish(image, panels, ["source, coronal"] * 2)
    for panel, (title, name, _, limits) in zip(panels, layers):
        _colour_bar(picture, draw, panel.origin, title, name, limits)
    return picture


def _colour_bar(picture, draw, origin: tuple[int, int], title: str, name: str, limits) -> None:
    """A horizontal colour bar at the panel's lower left: title, three values, the colours."""
    from PIL import Image

    width, height = 170, 12
    x0, y0 = origin[0] + 20, origin[1] + PANEL - 16 - height
    ramp = colour_map(name, np.linspace(0.0, 1.0, width))
    bar = np.repeat(ramp[None].astype(np.uint8), height, axis=0)
    picture.paste(Image.fromarray(bar), (x0, y0))
    small = _font(SMALL_SIZE)
    lo, hi = limits
    for fraction, value in ((0.0, lo), (0.5, (lo + hi) / 2), (1.0, hi)):
        anchor = {0.0: "ld", 0.5: "md", 1.0: "rd"}[fraction]
        x = x0 + fraction * width
        draw.text((x, y0 - 2), f"{value:.2g}", fill=_INK, font=small, anchor=anchor)
    draw.text((x0 + width / 2, y0 - 16), title, fill=_INK, font=small, anchor="md")
