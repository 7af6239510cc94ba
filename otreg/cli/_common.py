"""Options and helpers shared by the commands."""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any

import typer

ConfigOption = typer.Option(
    None,
    "--config",
    "-c",
    help="A TOML config file, or a preset name (see 'otreg config presets').",
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
    warnings.showwarning = _log_warning


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Third-party warnings go to the log (shown with -v), not raw onto stderr before otreg's
    one message."""
    logging.getLogger("otreg.warnings").info(
        "%s: %s (%s:%d)", category.__name__, message, filename, lineno
    )


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, default=str))
