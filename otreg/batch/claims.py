"""Atomic case claims: at most one process works on a case folder at a time.

A claim is the file ``OUT/<case>/.claim``, holding its owner (host, pid, start time, a random
token) as JSON. It is made by writing a private file and hard-linking it to ``.claim``: the link
fails when the name exists (atomic, also on NFS), and the claim's content is whole from its
first instant. Two shards or two submissions of one pipeline thus never run a case twice.

An owner that died without releasing its claim (SIGKILL, node crash) leaves the file behind:
when its host is this host and its pid is gone, the claim is broken and taken over, under a
second short-lived lock so that two processes breaking the same stale claim cannot both win.
An owner on another host is taken as alive, unless it ran in a Slurm job that squeue no longer
lists.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLAIM = ".claim"
BREAKER = ".claim.break"


def host_name() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # the state follows the command name in parentheses (which may hold spaces)
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def slurm_job_active(job: str) -> bool:
    """Whether Slurm job ``job`` is pending or running, by ``squeue`` (no accounting needed);
    True when squeue cannot tell (missing, failing for another reason than an unknown job)."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return True
    try:
        done = subprocess.run(
            [squeue, "-h", "-j", str(job), "-o", "%T"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return True
    if done.returncode != 0:
        return "invalid job id" not in done.stderr.lower()
    return bool(done.stdout.strip())


def owner_alive(owner: dict[str, Any]) -> bool:
    """Whether a claim's or status's owner may still be working: False when it ran on this
    host and its process is gone, or ran in a Slurm job that squeue no longer lists (a node
    that crashed); True otherwise, e.g. on another host outside Slurm, where nothing here can
    tell."""
    if owner.get("host") != host_name():
        job = owner.get("slurm_job")
        return slurm_job_active(job) if job else True
    try:
        return pid_alive(int(owner.get("pid", 0)))
    except (TypeError, ValueError):
        return False


@dataclass
class Claim:
    """A claim this process holds on ``folder``; :meth:`release` removes it."""

    folder: Path
    owner: dict[str, Any]

    def release(self) -> None:
        """Remove the claim if it is still ours."""
        path = self.folder / CLAIM
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("token") == self.owner["token"]:
                path.unlink()


def read_claim(folder: Path) -> dict[str, Any] | None:
    """The owner recorded in ``folder``'s claim, None when there is none. A claim that cannot
    be parsed (it never should: it is written whole) reads as an owner with no pid."""
    try:
        text = (folder / CLAIM).read_text()
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(text)
        return owner if isinstance(owner, dict) else {"raw": text}
    except ValueError:
        return {"raw": text}


def _link_new(path: Path, owner: dict[str, Any]) -> bool:
    """Create ``path`` holding ``owner`` unless it exists; True when this call created it."""
    private = path.with_name(f"{path.name}.{owner['token']}")
    private.write_text(json.dumps(owner))
    try:
        os.link(private, path)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            private.unlink()


def try_claim(folder: Path, **details: Any) -> Claim | None:
    """Claim ``folder`` (created if needed) for this process, or return None when a live owner
    holds it. ``details`` are recorded with the owner (e.g. a Slurm job id).

    Raises:
        OSError: the folder cannot be created or written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    owner = {
        "host": host_name(),
        "pid": os.getpid(),
        "started": time.time(),
        "token": uuid.uuid4().hex,
        **details,
    }
    if _link_new(folder / CLAIM, owner):
        return Claim(folder, owner)
    holder = read_claim(folder)
    if holder is None:  # released meanwhile: try once more
        return Claim(folder, owner) if _link_new(folder / CLAIM, owner) else None
    if owner_alive(holder):
        return None
    return _take_over(folder, holder, owner)


def _take_over(folder: Path, stale: dict[str, Any], owner: dict[str, Any]) -> Claim | None:
    """Replace the dead owner's claim by ours, under the breaker lock."""
    breaker = folder / BREAKER
    if not _link_new(breaker, owner):
        blocker = _read_json(breaker)
        if blocker is None or owner_alive(blocker):
            return None  # someone else is breaking it now
        # a breaker that died within the few lines below: remove its lock, let a later try win
        with contextlib.suppress(OSError):
            breaker.unlink()
        return None
    try:
        if read_claim(folder) != stale:
            return None  # not the claim we found dead any more
        with contextlib.suppress(FileNotFoundError):
            (folder / CLAIM).unlink()
        return Claim(folder, owner) if _link_new(folder / CLAIM, owner) else None
    finally:
        with contextlib.suppress(OSError):
            breaker.unlink()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
