"""A signal that stops a run is put off while a module is being imported, then handled."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from otreg.signals import outside_imports


class Stopped(BaseException):
    pass


def _stop(signum, frame):
    raise Stopped(signum)


def test_a_signal_during_an_import_is_handled_once_the_import_is_done(tmp_path, monkeypatch):
    # the module signals its own process half-way through its body: raised there, the
    # exception would end the import (in VTK's module set-up, a crash)
    (tmp_path / "signalled_while_imported.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "for _ in range(20):\n"
        "    time.sleep(0.01)\n"
        "COMPLETE = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    previous = signal.signal(signal.SIGUSR1, outside_imports(_stop))
    try:
        with pytest.raises(Stopped):
            import signalled_while_imported  # noqa: F401

            time.sleep(5)  # the signal comes again once the import is over
        assert sys.modules["signalled_while_imported"].COMPLETE
    finally:
        signal.signal(signal.SIGUSR1, previous)
        sys.modules.pop("signalled_while_imported", None)


def test_a_signal_outside_imports_is_handled_at_once():
    previous = signal.signal(signal.SIGUSR1, outside_imports(_stop))
    try:
        with pytest.raises(Stopped):
            signal.raise_signal(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
