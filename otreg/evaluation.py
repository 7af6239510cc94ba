"""evaluate(): how good a finished registration is, from its output folder.

Landmark target registration error before and after, and the transform's quality over the
source cloud: the numbers of ``metrics.json``, measured again (or on other landmarks or grids).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)


def transform_file(registration: str | Path) -> Path:
    """The ``transform.npz`` of an output folder of :func:`otreg.run` (or the file itself).

    Raises:
        InputError: there is none.
    """
    from .errors import InputError

    registration = Path(registration)
    path = registration / "transform.npz" if registration.is_dir() else registration
    if not path.is_file():
        raise InputError(
            registration, "no transform.npz here: give the output folder of 'otreg register'"
        )
    return path


def evaluate(
    registration: str | Path,
    source_landmarks: str | Path | None = None,
    target_landmarks: str | Path | None = None,
    *,
    landmark_format: Literal["mm", "dirlab"] = "mm",
    spacing: Sequence[float] | None = None,
    source: str | Path | None = None,
    grid_spacing: float | None = None,
    jacobian: bool = True,
    report: bool = False,
) -> dict[str, Any]:
    """Target registration error and transform quality of a registration.

    Args:
        registration: an output folder of :func:`otreg.run` (or its ``transform.npz``).
        source_landmarks, target_landmarks: paired landmark files (row i matches row i) in
            source (moving) and target (fixed) space; both or neither.
        landmark_format, spacing: how to read them (:func:`otreg.io.read_landmarks`).
        source: the source cloud for the quality measures (default: the source recorded in
            ``run.json``), sampled with the run's ``config.resolved.toml`` so that the
            numbers match ``metrics.json``.
        grid_spacing: Jacobian grid spacing, mm (default: the run's ``output.grid_spacing``).
        jacobian: measure the Jacobian determinant.
        report: with landmarks and an output folder, also write ``evaluation.json`` there
            (the summaries, and each landmark's TRE before and after) and add a landmark
            section to its ``report.html`` (rewritten unless the run set
            ``output.report = false``).

    Returns:
        {"landmarks": L, "before" / "after": TRE summaries (mm)} when landmarks are given, plus
        "jacobian" and "inverse_consistency_mm" as in ``metrics.json``.

    Raises:
        ConfigError, InputError: bad arguments or files, each named.
    """
    from .errors import ConfigError, InputError
    from .transforms import Transform

    if (source_landmarks is None) != (target_landmarks is None):
        raise ConfigError("give both --source-landmarks and --target-landmarks, or neither")
    transform = Transform.load(transform_file(registration))
    result: dict[str, Any] = {}
    if source_landmarks is not None and target_landmarks is not None:
        from .io import read_landmarks
        from .metrics import distance_summary, target_registration_error

        frame = run_config(registration).input.mesh_frame
        src = read_landmarks(source_landmarks, landmark_format, spacing, mesh_frame=frame)
        tgt = read_landmarks(target_landmarks, landmark_format, spacing, mesh_frame=frame)
        if len(src) != len(tgt):
            raise InputError(
                target_landmarks, f"has {len(tgt)} landmarks but {source_landmarks} has {len(src)}"
            )
        tre_before = target_registration_error(src, tgt)
        tre_after = target_registration_error(transform(src), tgt)
        result["landmarks"] = len(src)
        result["before"] = distance_summary(tre_before)
        result["after"] = distance_summary(tre_after)
        if report and Path(registration).is_dir():
            _write_evaluation(
                Path(registration),
                result,
                {
                    "source_landmarks": str(Path(source_landmarks).resolve()),
                    "target_landmarks": str(Path(target_landmarks).resolve()),
                    "tre_before_mm": tre_before.tolist(),
                    "tre_after_mm": tre_after.tolist(),
                    "target_landmarks_mm": tgt.tolist(),
                },
            )
    if jacobian or transform.invertible:
        result.update(_quality(Path(registration), transform, source, grid_spacing, jacobian))
    return result


def _write_evaluation(folder: Path, result: dict[str, Any], per_landmark: dict[str, Any]) -> None:
    """``folder/evaluation.json`` (the TRE summaries and ``per_landmark``), then the
    report's landmark section (:func:`otreg.report.build.write_report`)."""
    import datetime as _dt

    from .config import load_config
    from .errors import OutputError
    from .io.atomic import write_text_atomic
    from .report.build import EVALUATION_NAME, write_report

    document = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **result,
        **per_landmark,
    }
    try:
        write_text_atomic(folder / EVALUATION_NAME, json.dumps(document, indent=2))
        resolved = folder / "config.resolved.toml"
        if load_config(resolved if resolved.is_file() else None).output.report:
            write_report(folder, generated_by="otreg evaluate")
    except OutputError as err:  # a read-only folder: the numbers are still the result
        log.warning("evaluation.json and report.html not updated: %s", err)


def _quality(
    registration: Path,
    transform,
    source: str | Path | None,
    grid_spacing: float | None,
    jacobian: bool,
) -> dict[str, Any]:
    from .config import load_config
    from .io import load, load_options
    from .quality import transform_quality
    from .sampling import downsample, downsample_onto

    folder = registration if registration.is_dir() else registration.parent
    cfg = run_config(folder)
    if grid_spacing is not None:  # the schema's rule for output.grid_spacing
        cfg = load_config(cfg, output__grid_spacing=grid_spacing)
    if source is None:
        source = recorded_input(folder, "source")
        if source is None or not source.is_file():
            log.warning(
                "no transform quality: the source cloud recorded in %s is not found; pass --source",
                folder / "run.json",
            )
            return {}
    cloud = load(source, **load_options(cfg.input))
    target = recorded_input(folder, "target")
    if target is not None and target.is_file():
        # the run's own sampling: the source cut by the target's cells through the rigid part
        cells = downsample(load(target, **load_options(cfg.input)), cfg.input.points, seed=cfg.seed)
        cloud = downsample_onto(cloud, cells, transform.rigid, cfg.input.points, seed=cfg.seed)
    else:
        cloud = downsample(cloud, cfg.input.points, seed=cfg.seed)
    if jacobian:
        from .limits import BYTES_PER_GRID_NODE, check_memory, grid_nodes

        spacing = cfg.output.grid_spacing
        nodes = grid_nodes(cloud.points, spacing, spacing)
        check_memory(
            nodes * BYTES_PER_GRID_NODE,
            f"the Jacobian on a {spacing:g} mm grid ({nodes:.3g} nodes)",
            key="--grid-spacing" if grid_spacing is not None else "output.grid_spacing",
        )
    return transform_quality(transform, cloud.points, cfg.output.grid_spacing, jacobian=jacobian)


def recorded_input(registration: str | Path, role: str) -> Path | None:
    """The ``role`` ("source", "target", "reference") file recorded in the ``run.json`` of an
    output folder (or of a transform.npz's folder), or None."""
    registration = Path(registration)
    folder = registration if registration.is_dir() else registration.parent
    try:
        return Path(json.loads((folder / "run.json").read_text())["inputs"][role]["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_config(registration: str | Path):
    """The :class:`otreg.config.Config` of a run: its ``config.resolved.toml`` (the defaults
    where it has none)."""
    from .config import load_config

    registration = Path(registration)
    folder = registration if registration.is_dir() else registration.parent
    resolved = folder / "config.resolved.toml"
    return load_config(resolved if resolved.is_file() else None)
