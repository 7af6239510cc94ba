"""report.md: the registration summarised for a person."""

from __future__ import annotations

from typing import Any


def _row(name: str, r: dict[str, float]) -> str:
    return f"| {name} | {r['mean_mm']:.2f} | {r['p95_mm']:.2f} |"


def _kernels_text(kernels: dict[str, Any] | None) -> str:
    if not kernels:
        return "not recorded"
    if kernels["backend"] == "native":
        return f"compiled ({kernels['build_flags']}; {kernels['compiler']})"
    return f"torch, not the compiled ones: {kernels.get('reason', '')}"


def render_report(metrics: dict[str, Any], run: dict[str, Any]) -> str:
    """Markdown text of ``metrics.json`` and ``run.json``."""
    inputs = run["inputs"]
    lines = [
        "# otreg registration report",
        "",
        f"- source (moving): `{inputs['source']['path']}`",
        f"- target (fixed): `{inputs['target']['path']}`",
        f"- points registered: {metrics['points']['source']} source, {metrics['points']['target']} target",
        f"- device: {run['device']}; otreg {run['versions']['otreg']}; {run['created']}",
        f"- CPU kernels: {_kernels_text(run.get('kernels'))}",
        "",
        "## Residual distance, source -> nearest target point (mm)",
        "",
        "| after | mean | p95 |",
        "|---|---|---|",
        _row("nothing (input)", metrics["residual_before"]),
        _row("rigid", metrics["residual_after_rigid"]),
    ]
    for r in metrics["rounds"]:
        lines.append(
            _row(
                f"round {r['round']} (blur {r['blur_mm']:g}, sigma {r['sigma_mm']:g} mm)",
                r["residual_after"],
            )
        )
    if metrics.get("rounds_skipped"):
        skipped = ", ".join(map(str, metrics["rounds_skipped"]))
        lines.append(f"\nRounds skipped (converged, `match.tolerance`): {skipped}")
    lines += ["", "## Steps", "", "| step | time (s) |", "|---|---|"]
    lines += [f"| {k.removesuffix('_s')} | {v:.2f} |" for k, v in metrics["times"].items()]
    if "rigid" in metrics:
        m = metrics["rigid"]["matrix"]
        lines += ["", "## Rigid matrix (world RAS, mm; source -> target)", "", "```"]
        lines += [" ".join(f"{v: .6f}" for v in row) for row in m]
        lines += ["```"]
    if "dense_field" in metrics:
        d = metrics["dense_field"]
        lines += [
            "",
            "## Dense fields",
            "",
            f"- fixed grid {d['fixed_shape']}, moving grid {d['moving_shape']}, spacing {d['spacing_mm']} mm",
            "- fixed -> moving field, |phi(x) - y| over its grid: median "
            f"{d['inverse_residual_mm']['median']:.3g}, p99 {d['inverse_residual_mm']['p99']:.3g}, "
            f"max {d['inverse_residual_mm']['max']:.3g} mm",
        ]
    lines += _quality_lines(metrics)
    lines += ["", f"Transported mass (last round): {metrics['transported_mass']:.3f}", ""]
    return "\n".join(lines)


def _quality_lines(metrics: dict[str, Any]) -> list[str]:
    """The Jacobian determinant and inverse consistency sections (when measured)."""
    lines = []
    if "jacobian" in metrics:
        j = metrics["jacobian"]
        verdict = (
            "no folding"
            if j["folding_fraction"] == 0
            else (f"**folding at {100 * j['folding_fraction']:.2f} % of the grid points**")
        )
        lines += [
            "",
            "## Jacobian determinant of the transform",
            "",
            (
                f"On a {j['grid_spacing_mm']:g} mm grid over the source ({j['points']} points): "
                f"min {j['min']:.3f}, 1st percentile {j['p1']:.3f}, median {j['median']:.3f}, "
                f"max {j['max']:.3f}; {verdict} (det <= 0)."
            ),
        ]
    if "inverse_consistency_mm" in metrics:
        c = metrics["inverse_consistency_mm"]
        lines += [
            "",
            "## Inverse consistency",
            "",
            (
                "|phi^-1(phi(x)) - x| at the source points (mm): "
                f"mean {c['mean_mm']:.3g}, p95 {c['p95_mm']:.3g}, max {c['max_mm']:.3g}."
            ),
        ]
    return lines
