"""otreg register SOURCE TARGET -o OUT"""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from ._common import ConfigOption, JsonOption, SetOption, VerboseOption, print_json, setup_logging


@app.command()
def register(
    source: Path = typer.Argument(
        ..., help="Moving cloud (e.g. exhale): mesh, point list or NIfTI."
    ),
    target: Path = typer.Argument(..., help="Fixed cloud (e.g. inhale), same kinds of file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created; see the README)."),
    config: str | None = ConfigOption,
    set_: list[str] | None = SetOption,
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda."),
    points: int | None = typer.Option(
        None, "--points", help="Down-sample each cloud to N points (0: all)."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Random seed (down-sampling grid offsets)."
    ),
    label: list[int] | None = typer.Option(
        None, "--label", help="NIfTI: keep voxels of this value. Repeatable."
    ),
    volume: int | None = typer.Option(
        None, "--volume", help="NIfTI: index of the volume of a 4D image."
    ),
    intensity_range: tuple[float, float] | None = typer.Option(
        None, "--intensity-range", help="NIfTI: keep voxels with LOW <= value <= HIGH."
    ),
    weight_by: str | None = typer.Option(
        None, "--weight-by", help="Weight points by this point array (e.g. radius)."
    ),
    reference: Path | None = typer.Option(
        None,
        "--reference",
        help="Fixed image (NIfTI, NRRD, MetaImage) whose grid the fixed-space fields and .h5 "
        "transforms cover "
        "(default: TARGET's, when it is a NIfTI image; else the clouds' box).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    json_: bool = JsonOption,
    verbose: int = VerboseOption,
) -> None:
    """Register SOURCE (moving) onto TARGET (fixed): rigid -> OT matching -> smoothing.

    Without -c, the preset of the input type is used: lung_vessels for vessel clouds with a
    'radius' array, lung_points for other point clouds, lung_surface for surface meshes,
    lung_mask for NIfTI masks.
    """
    setup_logging(verbose)
    from ..runner import run
    from .console import stderr

    with stderr.status("loading") as status:
        done = run(
            source,
            target,
            out,
            config,
            overrides=set_ or (),
            overwrite=overwrite,
            reference=reference,
            on_step=status.update,
            device=device,
            seed=seed,
            input__points=points,
            input__label=label or None,
            input__intensity_range=intensity_range,
            input__volume=volume,
            input__weight_by=weight_by,
        )
    summary = done.summary()
    if json_:
        print_json({**summary, "metrics": done.registration.metrics})
    else:
        typer.echo(
            f"{out} ({summary['preset']}): residual {summary['residual_before_mm']:.2f} mm -> rigid "
            f"{summary['residual_after_rigid_mm']:.2f} mm -> {summary['residual_after_mm']:.2f} mm "
            f"in {summary['seconds']:.1f} s"
        )
