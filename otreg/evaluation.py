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

        src = read_landmarks(source_landmarks, landmark_format, spacing)
        tgt = read_landmarks(target_landmarks, landmark_format, spacing)
        if len(src) != len(tgt):
            raise InputError(
                target_landmarks, f"has {len(tgt)} landmarks but {source_landmarks} has {len(src)}"
            )
        result["landmarks"] = len(src)
        result["before"] = distance_summary(target_registration_error(src, tgt))
        result["after"] = distance_summary(target_registration_error(transform(src), tgt))
    if jacobian or transform.invertible:
        result.update(_quality(Path(registration), transform, source, grid_spacing, jacobian))
    return result


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
    from .sampling import downsample

    folder = registration if registration.is_dir() else registration.parent
    resolved = folder / "config.resolved.toml"
    cfg = load_config(resolved if resolved.is_file() else None)
    if grid_spacing is not None:  # the schema's rule for output.grid_spacing
        cfg = load_config(cfg, output__grid_spacing=grid_spacing)
    if source is None:
        source = recorded_source(folder)
        if source is None or not source.is_file():
            log.warning(
                "no transform quality: the source cloud recorded in %s is not found; pass --source",
                folder / "run.json",
            )
            return {}
    cloud = downsample(load(source, **load_options(cfg.input)), cfg.input.points, seed=cfg.seed)
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


def recorded_source(folder: Path) -> Path | None:
    """The source file recorded in ``folder/run.json``, or None."""
    try:
        return Path(json.loads((folder / "run.json").read_text())["inputs"]["source"]["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
