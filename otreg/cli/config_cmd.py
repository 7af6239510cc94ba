"""otreg config show | presets"""

from __future__ import annotations

import typer

from ._common import ConfigOption, SetOption

config_app = typer.Typer(
    help="Show the effective configuration and the presets.", no_args_is_help=True
)


@config_app.command("show")
def show(config: str | None = ConfigOption, set_: list[str] | None = SetOption) -> None:
    """Print the effective config (defaults < file/preset < --set) as TOML."""
    from ..config import load_config

    typer.echo(load_config(config, set_).to_toml(), nl=False)


@config_app.command("presets")
def presets() -> None:
    """List the packaged presets (use one with -c NAME)."""
    from ..config import PRESET_DIR, preset_names

    for name in preset_names():
        first = (PRESET_DIR / f"{name}.toml").read_text().splitlines()[0].lstrip("# ")
        typer.echo(f"{name}\t{first}")
