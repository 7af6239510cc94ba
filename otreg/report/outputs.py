"""Write a registration's output folder, all or nothing.

Everything is written into a hidden temporary sibling folder that is renamed onto OUT at the
end: a failed or killed run leaves no OUT that a resumed batch would trust.

Files (see the README for their frames):
  warped_source.<ext>        the source moved to the target, arrays displacement / confidence
  transform.npz              the whole transform, reloaded by 'otreg warp' / Transform.load
  rigid.txt                  4x4 rigid matrix, world RAS mm, source -> target
  rigid_fixed_to_moving.tfm  the same rigid part as an ITK transform file (LPS, fixed -> moving)
  field_fixed_to_moving.nii.gz   displacement on a grid over the target, LPS vectors (ITK/ANTs/Slicer)
  field_moving_to_fixed.nii.gz   displacement on a grid over the source, LPS vectors
  metrics.json, run.json, config.resolved.toml, report.md
  .otreg                     marker: otreg wrote this folder (only such folders are replaced)

While it is written, OUT is locked (otreg/io/output_folder.py): a second run on it fails at once.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..errors import SolverError
from ..io import warp_file, warped_suffix
from ..io.frames import matrix_ras_to_lps
from ..io.output_folder import (
    check_output_location,
    output_lock,
    remove_stale_folders,
    write_marker,
)
from ..warping import point_mapping
from .markdown import render_report
from .provenance import run_record


def check_output_dir(out: Path, overwrite: bool, inputs: Sequence[str | Path] = ()) -> None:
    """Fail early (before any work) if OUT cannot be (re)written (see
    :func:`otreg.io.output_folder.check_output_location`)."""
    check_output_location(out, overwrite, inputs)


def itk_affine_text(matrix_lps: np.ndarray) -> str:
    """An ITK 'Insight Transform File' holding a 4x4 LPS matrix as AffineTransform_double_3_3."""
    params = list(matrix_lps[:3, :3].ravel()) + list(matrix_lps[:3, 3])
    return (
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
        f"Parameters: {' '.join(f'{v:.10g}' for v in params)}\nFixedParameters: 0 0 0\n"
    )


def _finite(displacement: np.ndarray, name: str) -> np.ndarray:
    """``displacement``, if it holds no NaN or Inf (SolverError otherwise: nothing is written)."""
    if not np.isfinite(displacement).all():
        raise SolverError(
            f"writing {name}: the transform gives NaN or Inf on the output grid, so nothing was "
            "written; set output.dense_field = false, or raise smooth.sigma"
        )
    return displacement


def write_dense_fields(folder: Path, result, config: Config) -> dict[str, Any]:
    """The two ITK displacement fields; returns their description for metrics.json."""
    from ..transforms.itk import displacement_image, grid_over, grid_points, inverse_points

    spacing, margin = config.output.grid_spacing, config.output.grid_margin
    fixed_shape, fixed_affine = grid_over(result.target.points, spacing, margin)
    y = grid_points(fixed_shape, fixed_affine)
    x, inverse_residual = inverse_points(result.transform, y)
    inverse_residual = inverse_residual[np.isfinite(inverse_residual)]
    displacement_image(
        _finite(x - y, "field_fixed_to_moving"), fixed_shape, fixed_affine
    ).to_filename(folder / "field_fixed_to_moving.nii.gz")
    moving_shape, moving_affine = grid_over(result.source.points, spacing, margin)
    x = grid_points(moving_shape, moving_affine)
    moving_to_fixed = _finite(result.transform(x) - x, "field_moving_to_fixed")
    displacement_image(moving_to_fixed, moving_shape, moving_affine).to_filename(
        folder / "field_moving_to_fixed.nii.gz"
    )
    return {
        "spacing_mm": spacing,
        "fixed_shape": fixed_shape.tolist(),
        "moving_shape": moving_shape.tolist(),
        # how well field_fixed_to_moving inverts the transform, over its whole grid
        "inverse_residual_mm": {
            "median": float(np.median(inverse_residual)),
            "p99": float(np.percentile(inverse_residual, 99)),
            "max": float(inverse_residual.max()),
        },
    }


def write_registration(
    out: Path,
    result,
    config: Config,
    source_path: Path,
    target_path: Path,
    *,
    load_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
    argv: list[str] | None = None,
    preset: dict[str, str] | None = None,
) -> Path:
    """Write the output folder ``out`` of ``result`` (a RegistrationResult). Returns ``out``.

    ``preset``: {"name": the preset or config file the config came from, "chosen_by": why},
    recorded in run.json and atop config.resolved.toml.
    """
    out = Path(out)
    with output_lock(out):
        check_output_dir(out, overwrite, (source_path, target_path))
        remove_stale_folders(out)
        return _write_locked(
            out, result, config, source_path, target_path, load_kwargs, argv, preset
        )


def _write_locked(out, result, config, source_path, target_path, load_kwargs, argv, preset):
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_marker(tmp)
        transform = result.transform
        warp_file(
            source_path,
            tmp / f"warped_source{warped_suffix(source_path)}",
            point_mapping(transform),
            load_kwargs=load_kwargs,
        )
        transform.save(tmp / "transform.npz")
        np.savetxt(
            tmp / "rigid.txt",
            transform.rigid,
            fmt="%.10f",
            header="4x4 matrix, world RAS mm, source (moving) -> target (fixed)",
        )
        fixed_to_moving_lps = matrix_ras_to_lps(np.linalg.inv(transform.rigid))
        (tmp / "rigid_fixed_to_moving.tfm").write_text(itk_affine_text(fixed_to_moving_lps))
        metrics = dict(result.metrics)
        if config.output.dense_field:
            metrics["dense_field"] = write_dense_fields(tmp, result, config)
        run = run_record(
            inputs={"source": source_path, "target": target_path},
            device=metrics["device"],
            seed=config.seed,
            argv=argv,
        )
        header = ""
        if preset:
            run["preset"] = preset
            header = f"# from {preset['name']} ({preset['chosen_by']}), with the command line's settings\n"
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (tmp / "run.json").write_text(json.dumps(run, indent=2))
        (tmp / "config.resolved.toml").write_text(header + config.to_toml())
        (tmp / "report.md").write_text(render_report(metrics, run))
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
