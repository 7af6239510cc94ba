"""run(): one whole registration, from two files to a complete output folder.

``otreg register`` is a thin shell over :func:`run`, and so is every batch case: the same
inputs and settings give the same outputs, whichever way they are started.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, load_config

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What :func:`run` returns.

    Attributes:
        out: the output folder, complete (written atomically).
        registration: the :class:`otreg.pipeline.RegistrationResult` (transform, metrics,
            the registered clouds).
        config: the effective config (``out/config.resolved.toml``).
        preset: {"name": the preset or config the settings came from, "chosen_by": why}.
        seconds: wall-clock time of the whole run (loading to the last file written).
    """

    out: Path
    registration: Any
    config: Config
    preset: dict[str, str]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """The numbers ``otreg register`` prints: residuals (mm), transported mass, time."""
        metrics = self.registration.metrics
        return {
            "out": str(self.out),
            "preset": self.preset["name"],
            "seconds": round(self.seconds, 3),
            "residual_before_mm": metrics["residual_before"]["mean_mm"],
            "residual_after_rigid_mm": metrics["residual_after_rigid"]["mean_mm"],
            "residual_after_mm": metrics["residual_after"]["mean_mm"],
            "transported_mass": metrics["transported_mass"],
            "flags": [flag["title"] for flag in metrics["checks"]["flags"]],
        }


def run(
    source: str | Path,
    target: str | Path,
    out: str | Path,
    config: str | Path | Config | None = None,
    *,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    reference: str | Path | None = None,
    on_step: Callable[[str], None] | None = None,
    argv: list[str] | None = None,
    **settings: Any,
) -> RunResult:
    """Register the file ``source`` (moving) onto ``target`` (fixed) and write ``out``.

    Args:
        source, target: meshes, point lists or NIfTI volumes (see :func:`otreg.load`).
        out: the output folder; it must not exist or be empty, unless ``overwrite``.
        config: a preset name, a TOML file or a :class:`Config`; ``None`` picks the preset of
            the input type (:func:`otreg.preset_for`).
        overrides: ``"section.key=value"`` strings applied on top (``--set``).
        overwrite: replace an existing output folder.
        reference: an image (the fixed one: NIfTI, NRRD or MetaImage) whose grid the fixed-space displacement
            fields and composite ``.h5`` transforms cover (default: the target's when it is a
            NIfTI image, else the box of both clouds plus ``output.grid_margin``).
        on_step: called with a short description as each step starts (progress display).
        argv: the command line recorded in ``run.json`` (default: ``sys.argv``).
        settings: values applied last, ``__`` for the dot (``device="cpu"``,
            ``input__points=5000``); ``None`` values are ignored.

    Returns:
        A :class:`RunResult`.

    Raises:
        OtregError: InputError / ConfigError / OutputError (exit code 2) before any work is
            done; SolverError during it. Nothing is left in ``out`` on failure.
    """
    from .io import load, load_options
    from .io.output_folder import output_lock
    from .limits import memory_limit
    from .report.outputs import check_output_dir, write_registration

    out = Path(out)
    started = time.perf_counter()
    step = on_step or (lambda text: None)
    if config is None:
        # The preset depends on the files, read as the input settings given say: the packaged
        # presets leave the load options alone (tests/test_config.py). The other settings are
        # checked against the preset, whose rounds they may have to agree with.
        loading = load_config(
            None,
            [o for o in overrides if o.strip().startswith(("input.", "memory_limit_gb"))],
            **{k: v for k, v in settings.items() if k.startswith(("input__", "memory_limit_gb"))},
        )
    else:
        loading = cfg = load_config(config, overrides, **settings)
    options = load_options(loading.input)
    check_output_dir(out, overwrite, (source, target))
    if reference is not None:
        from .io.images import image_header

        reference = Path(reference)
        image_header(reference)  # a bad reference fails before any work
    # OUT is locked from its check to the final rename: a second run on it fails at once
    with output_lock(out), memory_limit(loading.memory_limit_gb):
        check_output_dir(out, overwrite, (source, target))  # again, now that it is ours
        step("loading")
        source_cloud = load(source, **options)
        target_cloud = load(target, **options)
        if config is None:
            from .presets import preset_for

            name, why = preset_for(source_cloud, target_cloud)
            cfg = load_config(name, overrides, **settings)
        else:
            name, why = (
                (str(config) if isinstance(config, (str, Path)) else "a Config object"),
                "-c",
            )
        log.info("config: %s (%s)", name, why)
        preset = {"name": name, "chosen_by": why}

        from .pipeline import register  # torch: only once the inputs are good

        registration = register(source_cloud, target_cloud, cfg, on_step=step)
        step("writing outputs")
        write_registration(
            out,
            registration,
            cfg,
            Path(source),
            Path(target),
            load_kwargs=options,
            overwrite=overwrite,
            argv=argv,
            preset=preset,
            reference=reference,
        )
    return RunResult(out, registration, cfg, preset, time.perf_counter() - started)
