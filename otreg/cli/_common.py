"""Options and helpers shared by the commands."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import typer

ConfigOption = typer.Option(
    None, "--config", "-c", help="A TOML config file, or a preset name (see 'otreg config presets')."
)
SetOption = typer.Option(
    None, "--set", help="Override one setting: section.key=value (TOML value). Repeatable."
)
JsonOption = typer.Option(False, "--json", help="Print one JSON document on stdout.")
VerboseOption = typer.Option(0, "--verbose", "-v", count=True, help="More log output on stderr.")


def setup_logging(verbose: int) -> None:
    """Library logs to stderr through rich; -v: INFO, -vv: DEBUG."""
    from rich.logging import RichHandler

    from .console import stderr

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=stderr, show_path=False)]
    )
    logging.getLogger("otreg").setLevel(level)


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, default=str))


def landmark_options(fmt: str, spacing: Optional[list[float]], where: str) -> dict[str, Any]:
    """Check --format/--spacing and return the keyword arguments of ``read_landmarks``."""
    from ..errors import ConfigError

    if fmt not in ("mm", "dirlab"):
        raise ConfigError(f"{where}: --format must be 'mm' or 'dirlab', got {fmt!r}")
    if fmt == "dirlab" and not spacing:
        raise ConfigError(f"{where}: --format dirlab needs --spacing SX SY SZ (mm)")
    return {"format": fmt, "spacing": tuple(spacing) if spacing else None}


def transform_path(out: Path) -> Path:
    """The transform file of a registration folder (or the file itself)."""
    from ..errors import InputError

    path = out / "transform.npz" if out.is_dir() else out
    if not path.is_file():
        raise InputError(out, "no transform.npz here: give the output folder of 'otreg register'")
    return path
