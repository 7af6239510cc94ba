"""Write a registration's output folder, all or nothing.

Everything is written into a hidden temporary sibling folder that is renamed onto OUT at the
end: a failed or killed run leaves no OUT that a resumed batch would trust.

Files (see the README for their frames):
  warped_source.<ext>        the source moved to the target, arrays displacement / confidence
  transform.npz              the whole transform, reloaded by 'otreg warp' / Transform.load
  rigid.txt                  4x4 rigid matrix, world RAS mm, source -> target
  rigid_fixed_to_moving.tfm  the same rigid part as an ITK transform file (LPS, fixed -> moving)
  transform_fixed_to_moving.h5   ITK composite (rigid + field): resamples moving images (ITK, ANTs,
                                 Slicer: also moves points and models there)
  transform_moving_to_fixed.h5   ITK composite: moves moving-space points (ITK, ANTs; LPS points)
  field_fixed_to_moving.nii.gz   displacement on the fixed grid, RAS vectors, intent 1006
  field_moving_to_fixed.nii.gz   displacement on the moving grid, RAS vectors, intent 1006
  metrics.json, run.json, config.resolved.toml
  report.html                a page for a person: pictures, plots, flagged numbers, provenance
  .otreg                     marker: otreg wrote this folder (only such folders are replaced)

While it is written, OUT is locked (otreg/io/output_folder.py): a second run on it fails at once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
from .provenance import run_record

log = logging.getLogger(__name__)


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


def _image_or_none(path: Path | None) -> Path | None:
    from ..io.images import is_image

    return path if path is not None and is_image(path) else None


def field_grids(
    result,
    config: Config,
    *,
    source_path: Path | None = None,
    target_path: Path | None = None,
    reference: Path | None = None,
) -> dict[str, Any]:
    """The grids of the dense fields: {"fixed": Grid, "moving": Grid, "fixed_from": text,
    "moving_from": text}.

    Fixed space: the grid of ``reference`` (an image), else of a NIfTI target, else the box of
    both clouds; moving space: the grid of a NIfTI source, else that box. Image grids
    keep the image's axes, every output.grid_spacing mm (whole voxels) and reach
    output.grid_margin beyond the image; the box reaches output.grid_margin beyond the clouds.
    """
    from ..io.images import image_header
    from ..transforms.grids import box_grid, image_grid

    spacing, margin = config.output.grid_spacing, config.output.grid_margin
    both = np.vstack([result.source.points, result.target.points])
    grids: dict[str, Any] = {}
    for side, image in (
        ("fixed", reference or _image_or_none(target_path)),
        ("moving", _image_or_none(source_path)),
    ):
        if image is None:
            grids[side] = box_grid(both, spacing, margin)
            grids[f"{side}_from"] = "the box of both clouds"
        else:
            grids[side] = image_grid(*image_header(image), spacing, margin)[0]
            grids[f"{side}_from"] = str(image)
    return grids


def write_dense_fields(
    folder: Path,
    result,
    config: Config,
    *,
    source_path: Path | None = None,
    target_path: Path | None = None,
    reference: Path | None = None,
    submit: Callable[[Callable[[], Any]], Any] | None = None,
) -> dict[str, Any]:
    """The displacement fields and composite ITK transforms (see :func:`field_grids` for
    their grids); returns their description for metrics.json.

    ``submit``: writes each file by handing it a function of no arguments (a background
    writer, so that compressing one file overlaps computing the next; the caller then waits
    for them and sees their errors); default: written here, one after the other.

    Files: field_fixed_to_moving.nii.gz (on the fixed grid: resamples images),
    field_moving_to_fixed.nii.gz (on the moving grid: moves points), and the composite
    transform_fixed_to_moving.h5 / transform_moving_to_fixed.h5 (rigid matrix and the fields'
    part, both fields on the fixed grid: the rigid part holds everywhere).
    """
    from functools import partial

    from ..transforms.itk import displacement_image, nonrigid_part, pullback, write_composite
    from ..transforms.rigid import apply_matrix

    write = submit or (lambda job: job())
    transform = result.transform
    grids = field_grids(
        result, config, source_path=source_path, target_path=target_path, reference=reference
    )
    fixed, moving = grids["fixed"], grids["moving"]
    y = fixed.points()
    x, inverse_residual = pullback(transform, fixed)
    image = displacement_image(_finite(x - y, "field_fixed_to_moving"), fixed)
    write(partial(image.to_filename, folder / "field_fixed_to_moving.nii.gz"))
    w = apply_matrix(transform.rigid, x) - y  # the fields' part of the pull-back
    write(
        partial(
            write_composite,
            folder / "transform_fixed_to_moving.h5",
            np.linalg.inv(transform.rigid),
            _finite(w, "transform_fixed_to_moving"),
            fixed,
            field_first=True,
        )
    )
    u = nonrigid_part(transform).displacement(y)
    write(
        partial(
            write_composite,
            folder / "transform_moving_to_fixed.h5",
            transform.rigid,
            _finite(u, "transform_moving_to_fixed"),
            fixed,
            field_first=False,
        )
    )
    x = moving.points()
    image = displacement_image(_finite(transform(x) - x, "field_moving_to_fixed"), moving)
    write(partial(image.to_filename, folder / "field_moving_to_fixed.nii.gz"))
    inverse_residual = inverse_residual[np.isfinite(inverse_residual)]
    return {
        "spacing_mm": config.output.grid_spacing,
        "fixed_shape": list(fixed.shape),
        "moving_shape": list(moving.shape),
        "fixed_grid_from": grids["fixed_from"],
        "moving_grid_from": grids["moving_from"],
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
    reference: Path | None = None,
) -> Path:
    """Write the output folder ``out`` of ``result`` (a RegistrationResult). Returns ``out``.

    ``preset``: {"name": the preset or config file the config came from, "chosen_by": why},
    recorded in run.json and atop config.resolved.toml. ``reference``: a NIfTI image whose
    grid the fixed-space fields cover (default: the target's, when it is a NIfTI image).
    """
    out = Path(out)
    with output_lock(out):
        check_output_dir(
            out, overwrite, tuple(p for p in (source_path, target_path, reference) if p)
        )
        remove_stale_folders(out)
        return _write_locked(
            out, result, config, source_path, target_path, load_kwargs, argv, preset, reference
        )


def _write_locked(
    out, result, config, source_path, target_path, load_kwargs, argv, preset, reference
):
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        # one background writer: the dense fields' files are compressed and written while the
        # next field, the report and the records are computed (released GIL: zlib, HDF5)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="otreg-writer") as writer:
            pending: list[Future] = []
            _write_files(
                tmp, result, config, source_path, target_path, load_kwargs, argv, preset,
                reference, lambda job: pending.append(writer.submit(job)),
            )  # fmt: skip
            for done in pending:
                done.result()  # a failed write raises here, before the folder is renamed
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


def _write_files(
    tmp, result, config, source_path, target_path, load_kwargs, argv, preset, reference, submit
) -> None:
    """Every file of the output folder into ``tmp`` (the dense fields' through ``submit``)."""
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
        metrics["dense_field"] = write_dense_fields(
            tmp,
            result,
            config,
            source_path=source_path,
            target_path=target_path,
            reference=reference,
            submit=submit,
        )
    inputs = {"source": source_path, "target": target_path}
    if reference is not None:
        inputs["reference"] = Path(reference)
    run = run_record(
        inputs=inputs,
        device=metrics["device"],
        seed=config.seed,
        argv=argv,
    )
    header = ""
    if preset:
        run["preset"] = preset
        header = (
            f"# from {preset['name']} ({preset['chosen_by']}), with the command line's settings\n"
        )
    config_text = header + config.to_toml()
    if config.output.report:
        metrics["times"] = {
            **metrics["times"],
            **_write_report(tmp, result, metrics, run, config, config_text),
        }
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (tmp / "run.json").write_text(json.dumps(run, indent=2))
    (tmp / "config.resolved.toml").write_text(config_text)


def _write_report(
    folder: Path,
    result,
    metrics: dict[str, Any],
    run: dict[str, Any],
    config: Config,
    config_text: str,
) -> dict[str, float]:
    """``folder/report.html``; returns its times for metrics.json ("report_s", the whole
    report, and "report_pictures_s"). A failure to make the page is logged, not raised: the
    registration's other outputs stand without it."""
    from .build import REPORT_NAME, ReportClouds, report_html

    started = time.perf_counter()
    try:
        clouds = ReportClouds.of(result.transform, result.source.points, result.target.points)
        page, timings = report_html(metrics, run, config, config_text, clouds)
        (folder / REPORT_NAME).write_text(page, encoding="utf-8")
    except Exception:
        log.exception("report.html not written (the registration's other outputs are)")
        return {}
    return {**timings, "report_s": time.perf_counter() - started}
