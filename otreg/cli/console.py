"""The one rich console of the CLI: on stderr, so that stdout carries results only."""

from rich.console import Console

stderr = Console(stderr=True)
