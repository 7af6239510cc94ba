"""The child process that draws the report's pictures with pyvista off-screen.

Run as ``python -m otreg.report._draw FOLDER`` (or ``-``: import pyvista first, then read
FOLDER from stdin, an empty line to quit; :func:`otreg.report.render.drawing_child_started`):
reads ``FOLDER/clouds.npz`` (arrays source,
target, warped (N, 3) / (M, 3) mm world RAS, displacement_mm (N,), confidence (N,)) and writes
``FOLDER/overlay.<ext>`` and ``FOLDER/fields.<ext>`` (WebP when Pillow has it, else PNG).

It runs apart from otreg because VTK does not raise when no OpenGL works: it kills its process
(segfault), and could hang on a broken GL stack. :mod:`otreg.report.render` starts it with a
time limit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

#: colours of the clouds in the pictures (and in the page's legend)
SOURCE_COLOUR, TARGET_COLOUR = "#d55e00", "#0072b2"

# name: (direction from the focal point to the camera, view-up, letters at the left, right,
# top and bottom edges). Radiological convention: the patient's right on the viewer's left.
VIEWS = {
    "coronal": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), ("R", "L", "S", "I")),
    "axial": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0), ("R", "L", "A", "P")),
}
PANEL = 480  # pixels per panel side


def _frame(plotter, view: str, bounds: np.ndarray) -> None:
    """Parallel projection of ``bounds`` ((2, 3) min/max mm) seen from the ``view`` side."""
    direction, up, letters = VIEWS[view]
    centre = bounds.mean(axis=0)
    extent = bounds[1] - bounds[0]
    right_axis = np.abs(np.cross(direction, up)).argmax()
    up_axis = int(np.abs(up).argmax())
    camera = plotter.camera
    camera.parallel_projection = True
    camera.focal_point = centre
    camera.position = centre + np.asarray(direction) * (extent.max() * 3 + 1)
    camera.up = up
    width, height = plotter.window_size
    aspect = width / height / plotter.shape[1] * plotter.shape[0]
    camera.parallel_scale = 0.6 * max(extent[up_axis], extent[right_axis] / aspect, 1.0)
    plotter.reset_camera_clipping_range()
    for text, position in zip(letters, ("left_edge", "right_edge", "upper_edge", "lower_edge")):
        _label(plotter, text, position, LETTER_SIZE)


#: where each label sits in its panel: (x, y) in the panel's normalised coordinates, and its
#: horizontal and vertical justification
_PLACES = {
    "upper_left": ((0.01, 0.99), "Left", "Top"),
    "left_edge": ((0.02, 0.5), "Left", "Centered"),
    "right_edge": ((0.98, 0.5), "Right", "Centered"),
    "upper_edge": ((0.5, 0.99), "Centered", "Top"),
    "lower_edge": ((0.5, 0.015), "Centered", "Bottom"),
}
#: font sizes (points at the panel's 480 pixels) of the edge letters and of the panel titles
LETTER_SIZE, TITLE_SIZE = 24, 19


def _label(plotter, text: str, where: str, size: int) -> None:
    """Black ``text`` at ``where`` (a key of _PLACES) in the current panel, a fixed font size.

    A plain text actor, not pyvista's named positions: those are corner annotations, which
    search for their font size at every render (most of a picture's drawing time on a
    software OpenGL: benchmarks/README.md, design measurements)."""
    (x, y), across, up = _PLACES[where]
    actor = plotter.add_text(text, position=(x, y), viewport=True, color="black")
    prop = actor.GetTextProperty()
    prop.SetFontSize(size)
    getattr(prop, f"SetJustificationTo{across}")()
    getattr(prop, f"SetVerticalJustificationTo{up}")()


def _points(plotter, points: np.ndarray, **kwargs) -> None:
    import pyvista as pv

    plotter.add_mesh(pv.PolyData(points), point_size=2.0, style="points", **kwargs)


def draw_overlay(clouds: dict[str, np.ndarray], path: Path) -> None:
    """Source (before) and warped source (after) over the target: coronal and axial."""
    import pyvista as pv

    bounds = np.stack(
        [
            np.min([clouds[k].min(axis=0) for k in ("source", "target", "warped")], axis=0),
            np.max([clouds[k].max(axis=0) for k in ("source", "target", "warped")], axis=0),
        ]
    )
    plotter = pv.Plotter(off_screen=True, shape=(2, 2), window_size=[2 * PANEL, 2 * PANEL])
    for row, (moving, when) in enumerate((("source", "before"), ("warped", "after"))):
        for column, view in enumerate(VIEWS):
            plotter.subplot(row, column)
            plotter.set_background("white")  # type: ignore[arg-type]
            _points(plotter, clouds["target"], color=TARGET_COLOUR, opacity=0.7)
            _points(plotter, clouds[moving], color=SOURCE_COLOUR, opacity=0.7)
            _label(plotter, f"{when}, {view}", "upper_left", TITLE_SIZE)
            _frame(plotter, view, bounds)
    _save(plotter, path)


def draw_fields(clouds: dict[str, np.ndarray], path: Path) -> None:
    """The source coloured by its displacement magnitude and by its match confidence."""
    import pyvista as pv

    source = clouds["source"]
    bounds = np.stack([source.min(axis=0), source.max(axis=0)])
    plotter = pv.Plotter(off_screen=True, shape=(1, 2), window_size=[2 * PANEL, PANEL])
    for column, (key, title, cmap, limits) in enumerate(
        (
            ("displacement_mm", "displacement (mm)", "viridis", None),
            ("confidence", "match confidence", "magma", (0.0, 1.0)),
        )
    ):
        plotter.subplot(0, column)
        plotter.set_background("white")  # type: ignore[arg-type]
        cloud = pv.PolyData(source)
        cloud[title] = clouds[key]
        plotter.add_mesh(
            cloud,
            scalars=title,
            cmap=cmap,  # type: ignore[arg-type]
            clim=limits,
            point_size=2.5,
            style="points",
            scalar_bar_args={
                "title": title,
                "color": "black",
                "vertical": False,
                "position_x": 0.04,
                "position_y": 0.03,
                "width": 0.36,
                "height": 0.08,
                "n_labels": 3,
                "fmt": "%.2g",
                "title_font_size": 12,
                "label_font_size": 11,
            },
        )
        _label(plotter, "source, coronal", "upper_left", TITLE_SIZE)
        _frame(plotter, "coronal", bounds)
    _save(plotter, path)


def _save(plotter, path: Path) -> None:
    from PIL import Image, features

    image = Image.fromarray(plotter.screenshot(return_img=True))
    plotter.close()
    if features.check("webp"):
        image.save(path.with_suffix(".webp"), quality=85, method=4)
    else:  # pragma: no cover (Pillow's wheels have WebP)
        image.save(path.with_suffix(".png"), optimize=True)


def main(folder: str) -> None:
    folder_path = Path(folder)
    with np.load(folder_path / "clouds.npz") as data:
        clouds = {k: data[k] for k in data.files}
    draw_overlay(clouds, folder_path / "overlay")
    draw_fields(clouds, folder_path / "fields")


def serve() -> None:
    """Import what drawing needs now, then draw the folder named on stdin (none: quit)."""
    import pyvista
    import pyvista.plotting  # noqa: F401  (pyvista imports it, and matplotlib, at first use)
    from PIL import Image, features  # noqa: F401

    folder = sys.stdin.readline().strip()
    if folder:
        main(folder)


if __name__ == "__main__":
    if sys.argv[1] == "-":  # started early: import now, draw the folder named on stdin later
        serve()
    else:
        main(sys.argv[1])
