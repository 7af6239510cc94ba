"""otreg evaluate OUT --source-landmarks A --target-landmarks B"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import app
from ._common import JsonOption, VerboseOption, landmark_options, print_json, setup_logging, transform_path


@app.command()
def evaluate(
    registration: Path = typer.Argument(..., help="Output folder of 'otreg register'."),
    source_landmarks: Path = typer.Option(..., "--source-landmarks", help="Landmarks in source (moving) space."),
    target_landmarks: Path = typer.Option(..., "--target-landmarks", help="The same landmarks in target (fixed) space, same order."),
    fmt: str = typer.Option("mm", "--format", help="Landmark format: mm (x y z rows) or dirlab (1-based voxel indices)."),
    spacing: Optional[tuple[float, float, float]] = typer.Option(None, "--spacing", help="DIR-LAB voxel size SX SY SZ, mm."),
    json_: bool = JsonOption,
    verbose: int = VerboseOption,
) -> None:
    """Target registration error (mm) of paired landmarks, before and after registration."""
    setup_logging(verbose)
    from ..errors import InputError
    from ..io import read_landmarks
    from ..metrics import distance_summary, target_registration_error
    from ..transforms import Transform

    options = landmark_options(fmt, spacing, str(source_landmarks))
    transform = Transform.load(transform_path(registration))
    src = read_landmarks(source_landmarks, **options)
    tgt = read_landmarks(target_landmarks, **options)
    if len(src) != len(tgt):
        raise InputError(target_landmarks, f"has {len(tgt)} landmarks but {source_landmarks} has {len(src)}")
    result = {
        "landmarks": len(src),
        "before": distance_summary(target_registration_error(src, tgt)),
        "after": distance_summary(target_registration_error(transform(src), tgt)),
    }
    if json_:
        print_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Target registration error, {len(src)} landmarks (mm)")
    table.add_column("")
    for key in ("mean", "median", "p95", "max"):
        table.add_column(key, justify="right")
    for when in ("before", "after"):
        table.add_row(when, *(f"{result[when][k + '_mm']:.2f}" for k in ("mean", "median", "p95", "max")))
    Console().print(table)
