"""``OUT/<case>/status.json``: what became of a case, written atomically at each change.

States:
  running      a worker is on it: host, pid, start time (a dead owner's case is taken over)
  ok           done: every output is in the folder (written last, so 'ok' means complete)
  failed       the error's kind and message; run again only with --retry-failed
  interrupted  stopped by SIGTERM/SIGINT (Slurm's time limit, scancel, ^C): run again by any rerun

A case without status.json is pending.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io.atomic import write_text_atomic
from .claims import owner_alive

STATUS = "status.json"
DONE, FAILED, RUNNING, INTERRUPTED, PENDING = "ok", "failed", "running", "interrupted", "pending"


def read_status(folder: Path) -> dict[str, Any] | None:
    """The case's status, None when it has none. An unreadable file reads as interrupted: the
    case is run again."""
    path = folder / STATUS
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        return {"state": INTERRUPTED, "error": {"kind": "status", "message": f"{path}: {err}"}}
    if not isinstance(status, dict) or "state" not in status:
        return {"state": INTERRUPTED, "error": {"kind": "status", "message": f"{path}: no state"}}
    return status


def write_status(folder: Path, status: dict[str, Any]) -> None:
    write_text_atomic(folder / STATUS, json.dumps(status, indent=2, default=str) + "\n")


def effective_state(status: dict[str, Any] | None) -> str:
    """The state a runner acts on: ``running`` with a dead owner on this host is interrupted."""
    if status is None:
        return PENDING
    state = status.get("state", INTERRUPTED)
    if state == RUNNING and not owner_alive(status):
        return INTERRUPTED
    return state


def needs_run(status: dict[str, Any] | None, retry_failed: bool) -> bool:
    """Whether a runner should (try to) run the case."""
    state = effective_state(status)
    return state in (PENDING, INTERRUPTED) or (state == FAILED and retry_failed)
