"""The ``otreg`` command: a thin typer shell over the library.

Exit codes: 0 ok, 1 runtime failure, 2 invalid input/config/usage, 3 batch with failed
cases, 130 interrupted (^C), 128 + N stopped by signal N (143: SIGTERM, 129: SIGHUP).
stdout carries results (``--json``); progress and logs go to stderr.
"""

from __future__ import annotations

import sys

import typer

from .._version import __version__

app = typer.Typer(
    name="otreg",
    help="Register lung point clouds, meshes and masks with optimal transport.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"otreg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """otreg: rigid -> optimal-transport matching -> smoothing, from files to files."""


from . import batch, config_cmd, evaluate, register, report, warp  # noqa: E402, F401  (commands register on app)

app.add_typer(config_cmd.config_app, name="config")
app.add_typer(batch.batch_app, name="batch")


def _click_exceptions() -> tuple[type[Exception], ...]:
    """ClickException classes that typer may raise: recent typer versions (>= 0.2x) vendor
    click as ``typer._click``, whose exceptions are not ``click.ClickException``."""
    classes: list[type[Exception]] = []
    try:
        from typer import _click as vendored

        classes.append(vendored.exceptions.ClickException)
    except ImportError:
        pass
    try:
        import click

        classes.append(click.ClickException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(classes)


class Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP (what Slurm, ``timeout`` and a closed terminal send), raised like ^C
    so that every ``except BaseException`` clean-up (temporary files and folders) runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_stopped_by: list[int] = []  # the signal that stopped the run (typer turns it into exit 130)


def _raise_terminated(signum: int, frame) -> None:
    if _stopped_by:
        return  # a second signal must not interrupt the clean-up of the first
    _stopped_by.append(signum)
    raise Terminated(signum)


def _interrupted() -> None:
    """Say why the run stopped and exit: 130 for ^C, 128 + N for signal N."""
    if _stopped_by:
        import signal

        signum = _stopped_by[0]
        typer.echo(f"otreg: interrupted ({signal.Signals(signum).name})", err=True)
        sys.exit(128 + signum)
    typer.echo("otreg: interrupted", err=True)
    sys.exit(130)


def _handle_termination() -> None:
    import signal

    from ..signals import outside_imports

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), outside_imports(_raise_terminated))
    signal.signal(signal.SIGINT, outside_imports(signal.default_int_handler))  # ^C


def _no_huge_pages_for_numpy() -> None:
    """Stop numpy asking the kernel for transparent huge pages on its large arrays.

    Where THP is ``madvise`` (with defrag ``madvise``, the common default), every large numpy
    array's first touch may stall in direct compaction: the ridge weight selection's kernel
    matrices took several times longer, and a DIR-LAB registration spent about 0.5 s more in
    the kernel (benchmarks/README.md, design measurements). The command owns its process;
    the library leaves the setting alone. ``NUMPY_MADVISE_HUGEPAGE=1`` keeps numpy's default.
    """
    import os

    if os.environ.get("NUMPY_MADVISE_HUGEPAGE"):
        return
    import numpy as np

    for module in ("_core", "core"):  # numpy 2, numpy 1
        multiarray = getattr(getattr(np, module, None), "multiarray", None)
        setter = getattr(multiarray, "_set_madvise_hugepage", None)
        if setter is not None:
            setter(False)
            return


def main() -> None:
    """Console entry point: run the app, turning otreg errors into one message + exit code."""
    from ..errors import OtregError

    _handle_termination()
    _no_huge_pages_for_numpy()
    try:
        # Not standalone: otreg errors reach the handlers below. typer then *returns* the
        # exit code of a typer.Exit (--help, --version, ^C -> 130) instead of exiting.
        code = app(standalone_mode=False)
    except OtregError as err:
        typer.echo(f"otreg: error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort as abort:
        if isinstance(abort.__cause__, EOFError):  # click turns a stray EOFError into Abort
            typer.echo(f"otreg: error: unexpected end of a file: {abort.__cause__}", err=True)
            sys.exit(1)
        _interrupted()
    except Exception as err:  # click usage errors carry their own exit code (2)
        if isinstance(err, _click_exceptions()):
            err.show()  # type: ignore[attr-defined]
            sys.exit(err.exit_code)  # type: ignore[attr-defined]
        raise
    if isinstance(code, int) and code:
        if code == 130:
            _interrupted()
        sys.exit(code)
