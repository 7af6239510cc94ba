"""One error hierarchy for otreg.

Every message names the input (file, config key ...), what is wrong and, where it helps, what to
do. The CLI maps these classes onto exit codes: ``InputError``/``ConfigError`` -> 2 (the user can
fix it), ``SolverError``, ``OutOfMemoryError`` and other ``OtregError`` -> 1.
"""

from __future__ import annotations

from pathlib import Path


class OtregError(Exception):
    """Base class of every error otreg raises on purpose."""

    exit_code = 1


class InputError(OtregError, ValueError):
    """An input file (or in-memory input) is missing, unreadable or unusable."""

    exit_code = 2

    def __init__(self, source: str | Path | None, problem: str):
        self.source = str(source) if source is not None else None
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


class ConfigError(OtregError, ValueError):
    """A configuration file, key or value is invalid."""

    exit_code = 2


class OutputError(OtregError):
    """An output location cannot be used (exists without --overwrite, not writable ...)."""

    exit_code = 2


class SolverError(OtregError, RuntimeError):
    """A numerical step failed (non-finite potentials, empty transport ...)."""

    exit_code = 1


class NativeKernelError(SolverError):
    """otreg's compiled kernels (otreg.native) failed: the C++ error, with what it worked on."""


class OutOfMemoryError(OtregError, MemoryError):
    """A computation needed more memory than the machine (or the job's limit) gives."""

    exit_code = 1
