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
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from . import svg
from .flags import registration_flags
from .html import Card, Page, render_page, table

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
EVALUATION_NAME = "evaluation.json"
WORST_LANDMARKS = 10


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
    flags = registration_flags(
        metrics, evaluation, mass_below=out.flag_mass_below, inverse_mm=out.flag_inverse_mm
    )
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
        drawn = render_pictures(
            shown.source,
            shown.target,
            shown.warped,
            shown.confidence,
            timeout=out.report_render_timeout,
        )
        pictures, note = dict(drawn.images), drawn.skipped
        timings["report_pictures_s"] = drawn.seconds
        slices, why = _image_slices(run, config, clouds)
        if slices:
            pictures["slices"] = slices
        elif why:
            note = f"{note}; {why}" if note else why
    plots = _registration_plots(metrics, clouds)
    page = Page(
        title="otreg registration report",
        subtitle=_subtitle(run),
        cards=_cards(metrics, evaluation, flags),
        flags=flags,
        pictures=pictures,
        pictures_note=note,
        plots=plots,
        rounds_table=_rounds_table(metrics),
        times=dict(metrics.get("times", {})),
        details=_details(metrics),
        config_text=config_text,
        run=run,
        footer=f"Written by {generated_by}, otreg {run.get('versions', {}).get('otreg', '?')}, "
        f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}.",
    )
    if evaluation:
        _landmarks(page, evaluation)
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


# ----------------------------------------------------------------------------- page parts
def _subtitle(run: dict[str, Any]) -> str:
    inputs = run.get("inputs", {})

    def name(role: str) -> str:
        path = inputs.get(role, {}).get("path", "?")
        return f'<b title="{escape(path)}">{escape(Path(path).name)}</b>'

    preset = run.get("preset", {}).get("name", "")
    return (
        f"source (moving) {name('source')} &rarr; target (fixed) {name('target')}"
        f" &middot; {escape(str(run.get('created', '')))} &middot; device "
        f"{escape(str(run.get('device', '')))}"
        + (f" &middot; config {escape(preset)}" if preset else "")
    )


def _cards(metrics: dict[str, Any], evaluation: dict[str, Any] | None, flags: list) -> list[Card]:
    flagged = {f.title: f.level for f in flags}
    before, after = metrics["residual_before"], metrics["residual_after"]
    cards = [
        Card(
            "residual distance, mean",
            f"{before['mean_mm']:.2f} → {after['mean_mm']:.2f} mm",
            f"rigid {metrics['residual_after_rigid']['mean_mm']:.2f} mm; p95 after "
            f"{after['p95_mm']:.2f} mm",
            flagged.get("Worse than no registration", ""),
        )
    ]
    if evaluation:
        cards.append(
            Card(
                f"landmark TRE, mean ({evaluation['landmarks']})",
                f"{evaluation['before']['mean_mm']:.2f} → {evaluation['after']['mean_mm']:.2f} mm",
                f"p95 {evaluation['after']['p95_mm']:.2f}, max {evaluation['after']['max_mm']:.2f} mm",
                flagged.get("Landmarks moved apart", ""),
            )
        )
    cards.append(
        Card(
            "transported mass",
            f"{100 * metrics['transported_mass']:.1f} %",
            "last round",
            flagged.get("Low transported mass", ""),
        )
    )
    if "jacobian" in metrics:
        j = metrics["jacobian"]
        cards.append(
            Card(
                "det J min / median",
                f"{j['min']:.2f} / {j['median']:.2f}",
                f"folding {100 * j['folding_fraction']:.2f} % of {j['points']} grid points",
                flagged.get("Folding", ""),
            )
        )
    if "inverse_consistency_mm" in metrics:
        c = metrics["inverse_consistency_mm"]
        cards.append(
            Card(
                "inverse consistency p95",
                f"{c['p95_mm']:.3f} mm",
                f"max {c['max_mm']:.3f} mm",
                flagged.get("Large inverse-consistency error", ""),
            )
        )
    gaps = [r["ot_relative_gap"] for r in metrics.get("rounds", []) if "ot_relative_gap" in r]
    if gaps:
        cards.append(Card("OT certificate gap", f"{gaps[-1]:.2e}", "relative, last round"))
    cards.append(
        Card(
            "points",
            f"{metrics['points']['source']} / {metrics['points']['target']}",
            "source / target, registered",
        )
    )
    steps = {k: v for k, v in metrics.get("times", {}).items() if not k.startswith("report")}
    cards.append(Card("time", f"{sum(steps.values()):.1f} s", "registration steps"))
    return cards


def _round_name(r: dict[str, Any]) -> str:
    return f"round {r['round']}"


def _registration_plots(
    metrics: dict[str, Any], clouds: ReportClouds | None
) -> list[tuple[str, str]]:
    rounds = metrics.get("rounds", [])
    steps = ["input", "rigid", *(_round_name(r) for r in rounds)]
    residuals = [
        metrics["residual_before"],
        metrics["residual_after_rigid"],
        *(r["residual_after"] for r in rounds),
    ]
    plots = [
        (
            "Residual distance from each source point to the nearest target point, weighted "
            "mean and 95th percentile, after each step (metrics.json: residual_*).",
            svg.line_chart(
                steps,
                {
                    "mean": [r["mean_mm"] for r in residuals],
                    "p95": [r["p95_mm"] for r in residuals],
                },
                title="Residual distance per step",
                y_label="mm",
            ),
        )
    ]
    if rounds:
        names = [_round_name(r) for r in rounds]
        plots.append(
            (
                "Mean distance the points moved in each non-rigid round (rounds.moved_mm): it "
                "shrinks as the rounds converge. Blur / sigma per round: "
                + ", ".join(f"{r['blur_mm']:g}/{r['sigma_mm']:g}" for r in rounds)
                + " mm.",
                svg.line_chart(
                    names,
                    {"moved": [r["moved_mm"] for r in rounds]},
                    title="Points moved per round",
                    y_label="mm",
                ),
            )
        )
        plots.append(
            (
                "Sinkhorn convergence per round: the relative marginal error at the end "
                "(solver.tol is the target) and, where measured (a balanced last round), the "
                "relative gap of the OT certificate (upper - lower) / lower.",
                svg.line_chart(
                    names,
                    {
                        "marginal error": [r["marginal_error"] for r in rounds],
                        "certificate gap": [r.get("ot_relative_gap") for r in rounds],
                    },
                    title="Solver convergence",
                    y_label="relative error",
                    log_y=True,
                ),
            )
        )
    if clouds is not None:
        from ..metrics import nearest_distances

        before = nearest_distances(clouds.source, clouds.target)
        after = nearest_distances(clouds.warped, clouds.target)
        plots.append(
            (
                "Distance from each source point to the nearest target point, before "
                "registration and after (per point, unweighted; values above the 99.5th "
                "percentile in the last bin).",
                svg.histogram_of(
                    {"before": before, "after": after},
                    title="Match distance",
                    x_label="distance to the nearest target point (mm)",
                ),
            )
        )
    histogram = metrics.get("jacobian", {}).get("histogram")
    if histogram:
        j = metrics["jacobian"]
        plots.append(
            (
                f"Jacobian determinant of the transform on a {j['grid_spacing_mm']:g} mm grid "
                "over the source: < 1 compression, > 1 expansion, <= 0 folding.",
                svg.histogram(
                    histogram["edges"],
                    {"det J": histogram["counts"]},
                    title="Jacobian determinant",
                    x_label="det J",
                    y_label="share of grid points (%)",
                    markers=[(0.0, "fold"), (1.0, "1")],
                ),
            )
        )
    return plots


def _rounds_table(metrics: dict[str, Any]) -> list[list[str]]:
    def res(r: dict[str, float]) -> str:
        return f"{r['mean_mm']:.2f} / {r['p95_mm']:.2f}"

    rows = [["input", *[""] * 9, res(metrics["residual_before"]), ""]]
    rigid = metrics.get("rigid")
    rows.append(
        [
            "rigid",
            *[""] * 4,
            str(rigid["iterations"]) if rigid else "off",
            *[""] * 4,
            res(metrics["residual_after_rigid"]),
            f"{metrics.get('times', {}).get('rigid_s', 0):.2f}",
        ]
    )
    for r in metrics.get("rounds", []):
        rows.append(
            [
                _round_name(r),
                f"{r['blur_mm']:g}",
                f"{r['sigma_mm']:g}",
                "balanced" if r["reach_mm"] is None else f"{r['reach_mm']:g}",
                r["regression"],
                str(r["iterations"]),
                f"{r['marginal_error']:.2e}",
                f"{r['transported_mass']:.3f}",
                f"{r['ot_relative_gap']:.2e}" if "ot_relative_gap" in r else "",
                f"{r['moved_mm']:.3f}",
                res(r["residual_after"]),
                f"{r['time_s']:.2f}",
            ]
        )
    for k in metrics.get("rounds_skipped", []):
        rows.append([f"round {k}", *[""] * 9, "skipped (match.tolerance)", ""])
    return rows


def _details(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    details = []
    if "rigid" in metrics:
        matrix = metrics["rigid"]["matrix"]
        details.append(
            (
                "Rigid matrix (world RAS mm, source → target)",
                table(["", "", "", ""], [[f"{v:.6f}" for v in row] for row in matrix], left=0),
            )
        )
    if "jacobian" in metrics:
        j = metrics["jacobian"]
        details.append(
            (
                "Jacobian determinant",
                table(
                    ["min", "p1", "median", "max", "det <= 0", "grid points", "grid (mm)"],
                    [
                        [
                            *(f"{j[k]:.3f}" for k in ("min", "p1", "median", "max")),
                            f"{100 * j['folding_fraction']:.2f} %",
                            str(j["points"]),
                            f"{j['grid_spacing_mm']:g}",
                        ]
                    ],
                    left=0,
                ),
            )
        )
    if "inverse_consistency_mm" in metrics:
        c = metrics["inverse_consistency_mm"]
        details.append(
            (
                "Inverse consistency |phi^-1(phi(x)) - x| at the source points (mm)",
                table(
                    ["mean", "median", "p95", "max"],
                    [[f"{c[k + '_mm']:.3f}" for k in ("mean", "median", "p95", "max")]],
                    left=0,
                ),
            )
        )
    if "dense_field" in metrics:
        d = metrics["dense_field"]
        r = d["inverse_residual_mm"]
        details.append(
            (
                "Dense fields",
                table(
                    [
                        "fixed grid",
                        "moving grid",
                        "spacing (mm)",
                        "inverse residual median / p99 / max (mm)",
                    ],
                    [
                        [
                            " x ".join(map(str, d["fixed_shape"])),
                            " x ".join(map(str, d["moving_shape"])),
                            f"{d['spacing_mm']:g}",
                            f"{r['median']:.3g} / {r['p99']:.3g} / {r['max']:.3g}",
                        ]
                    ],
                    left=0,
                ),
            )
        )
    return details


def _landmarks(page: Page, evaluation: dict[str, Any]) -> None:
    before = np.asarray(evaluation["tre_before_mm"])
    after = np.asarray(evaluation["tre_after_mm"])
    target = np.asarray(evaluation["target_landmarks_mm"])
    b, a = evaluation["before"], evaluation["after"]
    page.landmark_header = (
        f"{evaluation['landmarks']} landmark pairs ({evaluation['source_landmarks']} → "
        f"{evaluation['target_landmarks']}), target registration error mean / median / p95 / "
        f"max: before {b['mean_mm']:.2f} / {b['median_mm']:.2f} / {b['p95_mm']:.2f} / "
        f"{b['max_mm']:.2f} mm, after {a['mean_mm']:.2f} / {a['median_mm']:.2f} / "
        f"{a['p95_mm']:.2f} / {a['max_mm']:.2f} mm (otreg evaluate, {evaluation['created']})."
    )
    page.landmark_plots = [
        (
            "Target registration error of each landmark pair, before and after registration.",
            svg.histogram_of(
                {"before": before, "after": after},
                title="Landmark TRE",
                x_label="TRE (mm)",
                y_label="share of landmarks (%)",
                bins=30,
                upper_percentile=100.0,
            ),
        )
    ]
    worst = np.argsort(-after, kind="stable")[:WORST_LANDMARKS]
    page.landmark_table = [
        [str(i + 1), f"{before[i]:.2f}", f"{after[i]:.2f}", *(f"{v:.1f}" for v in target[i])]
        for i in worst
    ]


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
