"""The parts of report.html made from a registration's numbers: the subtitle, the summary
cards, the plots, the tables and the landmark section (:mod:`.html` writes them out)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import svg
from .html import Card, Page, table

if TYPE_CHECKING:
    from .build import ReportClouds

WORST_LANDMARKS = 10


def subtitle(run: dict[str, Any]) -> str:
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


def cards(metrics: dict[str, Any], evaluation: dict[str, Any] | None, flags: list) -> list[Card]:
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


def round_name(r: dict[str, Any]) -> str:
    return f"round {r['round']}"


def registration_plots(
    metrics: dict[str, Any], clouds: ReportClouds | None
) -> list[tuple[str, str]]:
    rounds = metrics.get("rounds", [])
    steps = ["input", "rigid", *(round_name(r) for r in rounds)]
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
        names = [round_name(r) for r in rounds]
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


def rounds_table(metrics: dict[str, Any]) -> list[list[str]]:
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
                round_name(r),
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


def details(metrics: dict[str, Any]) -> list[tuple[str, str]]:
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


def landmarks(page: Page, evaluation: dict[str, Any]) -> None:
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
