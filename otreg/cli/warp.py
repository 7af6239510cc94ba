"""otreg warp OUT FILE -o OUTFILE"""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from ._common import VerboseOption, setup_logging


@app.command()
def warp(
    registration: Path = typer.Argument(
        ..., help="Output folder of 'otreg register' (or its transform.npz)."
    ),
    file: Path = typer.Argument(
        ..., help="Points, mesh, landmarks, NIfTI image or mask in SOURCE space."
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="Warped file; its suffix picks the format (.txt: x y z rows; .nii.gz, .nrrd, "
        ".mha: a resampled image).",
    ),
    reference: Path | None = typer.Option(
        None,
        "--reference",
        help="Images: the fixed image (NIfTI, NRRD, MetaImage) whose grid the output takes "
        "(default: the registration's target, when it is a NIfTI image).",
    ),
    interpolation: str = typer.Option(
        "auto",
        "--interpolation",
        help="Images: auto (label for masks and label maps, else linear), linear, nearest "
        "or label (label maps stay integer).",
    ),
    fmt: str = typer.Option("mm", "--format", help="Landmark format of FILE: mm or dirlab."),
    spacing: tuple[float, float, float] | None = typer.Option(
        None, "--spacing", help="DIR-LAB voxel size SX SY SZ, mm."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    verbose: int = VerboseOption,
) -> None:
    """Move FILE from source space to target space with a computed registration."""
    setup_logging(verbose)
    from ..warping import warp as warp_registration

    typer.echo(
        str(
            warp_registration(
                registration,
                file,
                output,
                landmark_format=fmt,  # type: ignore[arg-type]
                spacing=spacing,
                overwrite=overwrite,
                reference=reference,
                interpolation=interpolation,  # type: ignore[arg-type]
            )
        )
    )
