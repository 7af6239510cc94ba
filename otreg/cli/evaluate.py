"""otreg evaluate OUT [--source-landmarks A --target-landmarks B] [--source FILE]"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from . import app
from ._common import JsonOption, VerboseOption, landmark_options, print_json, setup_logging, transform_path


@app.command()
def evaluate(
    registration: Path = typer.Argument(..., help="Output folder of 'otreg register'."),
    source_landmarks: Optional[Path] = typer.Option(None, "--source-landmarks", help="Landmarks in source (moving) space."),
    target_landmarks: Optional[Path] = typer.Option(None, "--target-landmarks", help="The same landmarks in target (fixed) space, same order."),
    fmt: str = typer.Option("mm", "--format", help="Landmark format: mm (x y z rows) or dirlab (1-based voxel indices)."),
    spacing: Optional[tuple[float, float, float]] = typer.Option(None, "--spacing", help="DIR-LAB voxel size SX SY SZ, mm."),
    source: Optional[Path] = typer.Option(
        None, "--source", help="Source cloud for the Jacobian grid (default: the source recorded in OUT/run.json)."
    ),
    grid_spacing: Optional[float] = typer.Option(
        None, "--grid-spacing", min=0.1, help="Jacobian grid spacing, mm (default: output.grid_spacing of the run)."
    ),
    jacobian: bool = typer.Option(True, "--jacobian/--no-jacobian", help="Measure the Jacobian determinant."),
    json_: bool = JsonOption,
    verbose: int = VerboseOption,
) -> None:
    """Target registration error (mm) of paired landmarks, before and after registration, and
    the quality of the transform: Jacobian determinant on a grid over the source (folding) and,
    for diffeomorphic (svf) transforms, inverse consistency at the source points."""
    setup_logging(verbose)
    from ..errors import ConfigError, InputError
    from ..transforms import Transform

    if (source_landmarks is None) != (target_landmarks is None):
        raise ConfigError("give both --source-landmarks and --target-landmarks, or neither")
    transform = Transform.load(transform_path(registration))
    result: dict[str, Any] = {}
    if source_landmarks is not None:
        from ..io import read_landmarks
        from ..metrics import distance_summary, target_registration_error

        options = landmark_options(fmt, spacing, str(source_landmarks))
        src = read_landmarks(source_landmarks, **options)
        tgt = read_landmarks(target_landmarks, **options)
        if len(src) != len(tgt):
            raise InputError(target_landmarks, f"has {len(tgt)} landmarks but {source_landmarks} has {len(src)}")
        result["landmarks"] = len(src)
        result["before"] = distance_summary(target_registration_error(src, tgt))
        result["after"] = distance_summary(target_registration_error(transform(src), tgt))
    if jacobian or transform.invertible:
        result.update(_quality(registration, transform, source, grid_spacing, jacobian))
    if json_:
        print_json(result)
        return
    _print_tables(result)


def _quality(registration: Path, transform, source: Optional[Path], grid_spacing: Optional[float],
             jacobian: bool) -> dict[str, Any]:
    """"jacobian" and "inverse_consistency_mm" over the source cloud, as in metrics.json: the
    source is loaded and down-sampled with the run's config (``config.resolved.toml``), so
    that the same settings give the same numbers."""
    import logging

    from ..config import Config, load_config
    from ..io import load, load_options
    from ..quality import inverse_consistency, jacobian_summary
    from ..sampling import downsample

    log = logging.getLogger("otreg.evaluate")
    folder = registration if registration.is_dir() else registration.parent
    resolved = folder / "config.resolved.toml"
    cfg = load_config(resolved) if resolved.is_file() else Config()
    if source is None:
        recorded = _recorded_source(folder)
        if recorded is None or not recorded.is_file():
            log.warning("no transform quality: the source cloud recorded in %s is not found; pass --source",
                        folder / "run.json")
            return {}
        source = recorded
    cloud = downsample(load(source, **load_options(cfg.input)), cfg.input.points, seed=cfg.seed)
    out: dict[str, Any] = {}
    if jacobian:
        out["jacobian"] = jacobian_summary(transform, cloud.points, grid_spacing or cfg.output.grid_spacing)
    consistency = inverse_consistency(transform, cloud.points)
    if consistency is not None:
        out["inverse_consistency_mm"] = consistency
    return out


def _recorded_source(folder: Path) -> Optional[Path]:
    try:
        return Path(json.loads((folder / "run.json").read_text())["inputs"]["source"]["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
            table.add_row(when, *(f"{result[when][k + '_mm']:.2f}" for k in ("mean", "median", "p95", "max")))
        console.print(table)
    if "jacobian" in result:
        j = result["jacobian"]
        table = Table(title=f"Jacobian determinant, {j['points']} points of a {j['grid_spacing_mm']:g} mm grid over the source")
        for key in ("min", "p1", "median", "max", "det <= 0"):
            table.add_column(key, justify="right")
        table.add_row(*(f"{j[k]:.3f}" for k in ("min", "p1", "median", "max")), f"{100 * j['folding_fraction']:.2f} %")
        console.print(table)
    if "inverse_consistency_mm" in result:
        c = result["inverse_consistency_mm"]
        table = Table(title="Inverse consistency |phi^-1(phi(x)) - x| at the source points (mm)")
        for key in ("mean", "median", "p95", "max"):
            table.add_column(key, justify="right")
        table.add_row(*(f"{c[k + '_mm']:.3f}" for k in ("mean", "median", "p95", "max")))
        console.print(table)
