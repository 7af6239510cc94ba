"""report.html of a registration: gather its numbers, pictures and plots, and write the page.

:func:`report_html` makes the page from what a run has in memory (``otreg register`` calls it
before its output folder is renamed into place); :func:`write_report` makes it again from an
output folder (``otreg report OUT``, and ``otreg evaluate`` to add the landmarks).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from .flags import registration_flags
from .html import Page, render_page
from .sections import cards, details, landmarks, registration_plots, rounds_table, subtitle

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
EVALUATION_NAME = "evaluation.json"


@dataclass
class ReportClouds:
    """The registered clouds as the report shows them (mm, world RAS).

    Attributes:
        source: (N, 3) the source as registered (after down-sampling).
        target: (M, 3) the target as registered.
        warped: (N, 3) ``source`` moved by the transform.
        confidence: (N,) the transform's match confidence at the source points.
    """

    source: np.ndarray
    target: np.ndarray
    warped: np.ndarray
    confidence: np.ndarray
    transform: Any = None

    @classmethod
    def of(cls, transform, source: np.ndarray, target: np.ndarray) -> ReportClouds:
        """The clouds of a transform over (N, 3) ``source`` and (M, 3) ``target`` points."""
        source = np.asarray(source, dtype=np.float64)
        warped, confidence = transform.apply(source)
        return cls(source, np.asarray(target, dtype=np.float64), warped, confidence, transform)

    def thinned(self, n: int) -> ReportClouds:
        """At most ``n`` points per cloud (every k-th; 0 keeps all), for the pictures."""
        if n == 0:
            return self
        s = max(1, -(-len(self.source) // n))
        t = max(1, -(-len(self.target) // n))
        return ReportClouds(
            self.source[::s], self.target[::t], self.warped[::s], self.confidence[::s]
        )


def report_html(
    metrics: dict[str, Any],
    run: dict[str, Any],
    config: Config,
    config_text: str,
    clouds: ReportClouds | None,
    *,
    clouds_missing: str | None = None,
    evaluation: dict[str, Any] | None = None,
    generated_by: str = "otreg register",
) -> tuple[str, dict[str, float]]:
    """The report page and its timings.

    Args:
        metrics, run: the contents of ``metrics.json`` and ``run.json``.
        config: the run's effective config (``output.report_*`` and ``output.flag_*`` used).
        config_text: ``config.resolved.toml`` as written.
        clouds: the registered clouds, or None (then no pictures nor distance histogram;
            ``clouds_missing`` says why).
        evaluation: the contents of ``evaluation.json`` (landmark TRE), or None.
        generated_by: the command named in the page's footer.

    Returns:
        (the HTML text, {"report_pictures_s": drawing time}).
    """
    out = config.output
    flags = registration_flags(metrics, evaluation, config.checks.max_inverse_error_mm)
    pictures: dict[str, tuple[str, bytes]] = {}
    note = None
    timings: dict[str, float] = {}
    if not out.report_pictures:
        note = "output.report_pictures = false"
    elif clouds is None:
        note = clouds_missing or "the registered clouds are not available"
    else:
        from .render import render_pictures

        shown = clouds.thinned(out.report_points)
        drawn = render_pictures(shown.source, shown.target, shown.warped, shown.confidence)
        pictures = dict(drawn.images)
        timings["report_pictures_s"] = drawn.seconds
        slices, why = _image_slices(run, config, clouds)
        if slices:
            pictures["slices"] = slices
        elif why:
            note = f"{note}; {why}" if note else why
    plots = registration_plots(metrics, clouds)
    page = Page(
        title="otreg registration report",
        subtitle=subtitle(run),
        cards=cards(metrics, evaluation, flags),
        flags=flags,
        pictures=pictures,
        pictures_note=note,
        plots=plots,
        rounds_table=rounds_table(metrics),
        times=dict(metrics.get("times", {})),
        details=details(metrics),
        config_text=config_text,
        run=run,
        footer=f"Written by {generated_by}, otreg {run.get('versions', {}).get('otreg', '?')}, "
        f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}.",
    )
    if evaluation:
        landmarks(page, evaluation)
    return render_page(page), timings


def _image_slices(
    run: dict[str, Any], config: Config, clouds: ReportClouds
) -> tuple[tuple[str, bytes] | None, str | None]:
    """The fused fixed/moving slices when both inputs are images (:mod:`.slices`), or
    (None, why they failed) / (None, None) for other inputs."""
    from .slices import fused_planes, fused_slices, is_image

    try:
        paths = [Path(run["inputs"][role]["path"]) for role in ("source", "target")]
    except (KeyError, TypeError):
        return None, None
    if not all(is_image(p) for p in paths) or clouds.transform is None:
        return None, None
    if not all(p.is_file() for p in paths):
        return None, "image slices skipped: an input image is not found"
    try:
        centre = clouds.target.mean(axis=0)
        planes = fused_planes(
            paths[0], paths[1], clouds.transform, centre, volume=config.input.volume
        )
        picture = fused_slices(planes)
    except Exception as err:  # a report without slices rather than a failed run
        log.warning("report.html without image slices: %s", err)
        return None, f"image slices skipped: {err}"
    return picture, None


# ----------------------------------------------------------------------------- from a folder
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def clouds_from_folder(
    folder: Path, config: Config, run: dict[str, Any]
) -> tuple[ReportClouds | None, str | None]:
    """The registered clouds of an output folder: its source and target files (from
    ``run.json``), sampled as the run did, and its ``transform.npz``. (None, why) when an
    input file is gone or unreadable."""
    from ..errors import OtregError
    from ..io import load, load_options
    from ..sampling import downsample
    from ..transforms import Transform

    paths = {}
    for role in ("source", "target"):
        try:
            paths[role] = Path(run["inputs"][role]["path"])
        except (KeyError, TypeError):
            return None, f"run.json does not name the {role} file"
        if not paths[role].is_file():
            return None, f"the {role} file {paths[role]} (run.json) is not found"
    try:
        options = load_options(config.input)
        source, target = (
            downsample(load(paths[r], **options), config.input.points, seed=config.seed)
            for r in ("source", "target")
        )
        transform = Transform.load(folder / "transform.npz")
    except (OtregError, OSError, ValueError) as err:
        return None, f"cannot read the registered clouds: {err}"
    return ReportClouds.of(transform, source.points, target.points), None


def write_report(
    registration: str | Path, *, pictures: bool | None = None, generated_by: str = "otreg report"
) -> Path:
    """Write (or rewrite) ``report.html`` in an output folder of :func:`otreg.run`.

    Reads ``metrics.json``, ``run.json``, ``config.resolved.toml`` and, when ``otreg
    evaluate`` wrote it, ``evaluation.json``; the pictures need the source and target files
    named in ``run.json`` (else the page says so and keeps its plots).

    Args:
        registration: the output folder.
        pictures: draw the pictures (default: the run's ``output.report_pictures``).
        generated_by: the command named in the page's footer.

    Returns:
        The path of ``report.html`` (written atomically).

    Raises:
        InputError: the folder is not an output folder of otreg (no metrics.json).
    """
    from ..config import load_config
    from ..errors import InputError
    from ..io.atomic import write_text_atomic

    folder = Path(registration)
    metrics = _read_json(folder / "metrics.json")
    if not folder.is_dir() or metrics is None:
        raise InputError(
            folder, "no readable metrics.json here: give the output folder of 'otreg register'"
        )
    run = _read_json(folder / "run.json") or {}
    resolved = folder / "config.resolved.toml"
    config = load_config(resolved if resolved.is_file() else None)
    if pictures is not None:
        config = load_config(config, output__report_pictures=pictures)
    config_text = resolved.read_text() if resolved.is_file() else "(config.resolved.toml not found)"
    started = time.perf_counter()
    # the match-distance histogram needs the clouds too, with or without pictures
    clouds, missing = clouds_from_folder(folder, config, run)
    page, _ = report_html(
        metrics,
        run,
        config,
        config_text,
        clouds,
        clouds_missing=missing,
        evaluation=_read_json(folder / EVALUATION_NAME),
        generated_by=generated_by,
    )
    path = write_text_atomic(folder / REPORT_NAME, page)
    log.info("wrote %s in %.1f s", path, time.perf_counter() - started)
    return path
