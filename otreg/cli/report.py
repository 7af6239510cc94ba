"""otreg report OUT [--no-pictures]"""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from ._common import VerboseOption, setup_logging


@app.command()
def report(
    registration: Path = typer.Argument(..., help="Output folder of 'otreg register'."),
    pictures: bool | None = typer.Option(
        None,
        "--pictures/--no-pictures",
        help="Draw the clouds (default: the run's output.report_pictures).",
    ),
    verbose: int = VerboseOption,
) -> None:
    """Write OUT/report.html again from the folder's files (metrics.json, run.json,
    config.resolved.toml, evaluation.json): pictures, plots, flagged numbers, provenance.
    Prints its path."""
    setup_logging(verbose)
    from ..report.build import write_report

    typer.echo(str(write_report(registration, pictures=pictures)))
