"""otreg evaluate OUT [--source-landmarks A --target-landmarks B] [--source FILE]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from . import app
from ._common import JsonOption, VerboseOption, print_json, setup_logging


@app.command()
def evaluate(
    registration: Path = typer.Argument(..., help="Output folder of 'otreg register'."),
    source_landmarks: Path | None = typer.Option(
        None, "--source-landmarks", help="Landmarks in source (moving) space."
    ),
    target_landmarks: Path | None = typer.Option(
        None, "--target-landmarks", help="The same landmarks in target (fixed) space, same order."
    ),
    fmt: str = typer.Option(
        "mm", "--format", help="Landmark format: mm (x y z rows) or dirlab (1-based voxel indices)."
    ),
    spacing: tuple[float, float, float] | None = typer.Option(
        None, "--spacing", help="DIR-LAB voxel size SX SY SZ, mm."
    ),
    source: Path | None = typer.Option(
        None,
        "--source",
        help="Source cloud for the Jacobian grid (default: the source recorded in OUT/run.json).",
    ),
    grid_spacing: float | None = typer.Option(
        None,
        "--grid-spacing",
        help="Jacobian grid spacing, mm (default: output.grid_spacing of the run).",
    ),
    jacobian: bool = typer.Option(
        True, "--jacobian/--no-jacobian", help="Measure the Jacobian determinant."
    ),
    report: bool = typer.Option(
        True,
        "--report/--no-report",
        help="With landmarks: write OUT/evaluation.json and add the landmarks to OUT/report.html.",
    ),
    json_: bool = JsonOption,
    verbose: int = VerboseOption,
) -> None:
    """Target registration error (mm) of paired landmarks, before and after registration, and
    the quality of the transform: Jacobian determinant on a grid over the source (folding) and,
    for diffeomorphic (svf) transforms, inverse consistency at the source points."""
    setup_logging(verbose)
    from ..evaluation import evaluate as evaluate_registration

    result = evaluate_registration(
        registration,
        source_landmarks,
        target_landmarks,
        landmark_format=fmt,  # type: ignore[arg-type]
        spacing=spacing,
        source=source,
        grid_spacing=grid_spacing,
        jacobian=jacobian,
        report=report,
    )
    if json_:
        print_json(result)
        return
    _print_tables(result)


def _print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if "landmarks" in result:
        table = Table(title=f"Target registration error, {result['landmarks']} landmarks (mm)")
        table.add_column("")
        for key in ("mean", "median", "p95", "max"):
            table.add_column(key, justify="right")
        for when in ("before", "after"):
            table.add_row(
                when, *(f"{result[when][k + '_mm']:.2f}" for k in ("mean", "median", "p95", "max"))
            )
        console.print(table)
    if "jacobian" in result:
        j = result["jacobian"]
        table = Table(
            title=f"Jacobian determinant, {j['points']} points of a {j['grid_spacing_mm']:g} mm grid over the source"
        )
        for key in ("min", "p1", "median", "max", "det <= 0"):
            table.add_column(key, justify="right")
        table.add_row(
            *(f"{j[k]:.3f}" for k in ("min", "p1", "median", "max")),
            f"{100 * j['folding_fraction']:.2f} %",
        )
        console.print(table)
    if "inverse_consistency_mm" in result:
        c = result["inverse_consistency_mm"]
        table = Table(title="Inverse consistency |phi^-1(phi(x)) - x| at the source points (mm)")
        for key in ("mean", "median", "p95", "max"):
            table.add_column(key, justify="right")
        table.add_row(*(f"{c[k + '_mm']:.3f}" for k in ("mean", "median", "p95", "max")))
        console.print(table)
