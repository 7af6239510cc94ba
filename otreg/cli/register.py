"""otreg register SOURCE TARGET -o OUT"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import typer

from . import app
from ._common import ConfigOption, JsonOption, SetOption, VerboseOption, print_json, setup_logging


@app.command()
def register(
    source: Path = typer.Argument(..., help="Moving cloud (e.g. exhale): mesh, point list or NIfTI."),
    target: Path = typer.Argument(..., help="Fixed cloud (e.g. inhale), same kinds of file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created; see the README)."),
    config: Optional[str] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda."),
    points: Optional[int] = typer.Option(None, "--points", help="Down-sample each cloud to N points (0: all)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (down-sampling grid offsets)."),
    label: Optional[list[int]] = typer.Option(None, "--label", help="NIfTI: keep voxels of this value. Repeatable."),
    volume: Optional[int] = typer.Option(None, "--volume", help="NIfTI: index of the volume of a 4D image."),
    intensity_range: Optional[tuple[float, float]] = typer.Option(
        None, "--intensity-range", help="NIfTI: keep voxels with LOW <= value <= HIGH."
    ),
    weight_by: Optional[str] = typer.Option(None, "--weight-by", help="Weight points by this point array (e.g. radius)."),
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
    from ..config import load_config
    from ..io import load, load_options
    from ..report.outputs import check_output_dir, write_registration
    from .console import stderr

    flags = dict(
        device=device,
        seed=seed,
        input__points=points,
        input__label=label or None,
        input__intensity_range=intensity_range,
        input__volume=volume,
        input__weight_by=weight_by,
    )
    if config is not None:
        cfg = load_config(config, set_, **flags)
        options = load_options(cfg.input)
    else:  # the preset depends on the files: read them as the input settings given say
        input_settings = [item for item in set_ or [] if item.strip().startswith("input.")]
        options = load_options(load_config(None, input_settings, **flags).input)
    check_output_dir(out, overwrite)
    started = time.perf_counter()
    with stderr.status("loading") as status:
        source_cloud = load(source, **options)
        target_cloud = load(target, **options)
        if config is None:
            from ..presets import preset_for

            preset, why = preset_for(source_cloud, target_cloud)
            # the packaged presets leave the load options alone (tests/test_config.py): the
            # clouds read above are the preset's
            cfg = load_config(preset, set_, **flags)
        else:
            preset, why = config, "-c"
        logging.getLogger("otreg").info("config: %s (%s)", preset, why)
        from ..pipeline import register as run_registration  # torch: only once inputs are good

        result = run_registration(source_cloud, target_cloud, cfg, on_step=lambda s: status.update(s))
        status.update("writing outputs")
        write_registration(out, result, cfg, source, target, load_kwargs=options, overwrite=overwrite,
                           preset={"name": preset, "chosen_by": why})
    metrics = result.metrics
    summary = {
        "out": str(out),
        "preset": preset,
        "seconds": round(time.perf_counter() - started, 3),
        "residual_before_mm": metrics["residual_before"]["mean_mm"],
        "residual_after_rigid_mm": metrics["residual_after_rigid"]["mean_mm"],
        "residual_after_mm": metrics["residual_after"]["mean_mm"],
        "transported_mass": metrics["transported_mass"],
    }
    if json_:
        print_json({**summary, "metrics": metrics})
    else:
        typer.echo(
            f"{out} ({preset}): residual {summary['residual_before_mm']:.2f} mm -> rigid "
            f"{summary['residual_after_rigid_mm']:.2f} mm -> {summary['residual_after_mm']:.2f} mm "
            f"in {summary['seconds']:.1f} s"
        )
