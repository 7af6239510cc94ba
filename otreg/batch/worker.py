"""One case, start to end, in its own process: claim, run, write status.json, release.

The batch runners start ``python -m otreg.batch.worker PIPELINE CASE`` with the thread
settings of :mod:`otreg.batch.threads` in its environment, so that torch, BLAS and OpenMP size
their pools before they start. The case itself is one :func:`otreg.run` call (plus
:func:`otreg.evaluate` when the case has landmarks), into a hidden staging folder inside the
case folder; its files are moved into ``OUT/<case>/`` and only then is the status set to ok.

Exit codes: 0 ok, 3 failed, 4 not run (done already, failed without --retry-failed, or claimed
by a live worker), 143 interrupted (SIGTERM / SIGINT).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import OtregError
from ..signals import outside_imports
from .claims import CLAIM, Claim, host_name, try_claim
from .manifest import Case
from .pipeline import Pipeline
from .status import DONE, FAILED, INTERRUPTED, RUNNING, needs_run, read_status, write_status
from .validate import case_overrides

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_SKIPPED, EXIT_INTERRUPTED = 0, 3, 4, 143
STAGING = ".staging-"


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived while the case ran."""


_signals_received: list[str] = []


def _interrupt(signum: int, frame: Any) -> None:
    _signals_received.append(signal.Signals(signum).name)
    if len(_signals_received) == 1:  # once: a second signal must not break the clean-up
        raise Interrupted(_signals_received[-1])


def slurm_details() -> dict[str, str]:
    """The Slurm job of this process, when there is one."""
    keys = {
        "SLURM_JOB_ID": "slurm_job",
        "SLURM_ARRAY_JOB_ID": "slurm_array_job",
        "SLURM_ARRAY_TASK_ID": "slurm_array_task",
    }
    return {name: os.environ[key] for key, name in keys.items() if os.environ.get(key)}


def clear_case_folder(folder: Path) -> None:
    """Remove what an earlier attempt left (staging folders, partial outputs, a killed
    claimer's private claim file), but not the claim: the caller holds it."""
    for entry in folder.iterdir():
        if entry.name == CLAIM:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


def run_case(
    pipeline: Pipeline, case: Case, *, retry_failed: bool = False, threads: int | None = None
) -> int:
    """Run one case if it needs running and nobody else is on it; returns the exit code above.

    Raises:
        OSError: the case folder cannot be created or written (a read-only or full disk).
    """
    folder = pipeline.output / case.id
    if not needs_run(read_status(folder), retry_failed):
        return EXIT_SKIPPED
    claim = try_claim(folder, **slurm_details())
    if claim is None:
        log.info("%s: claimed by another worker", case.id)
        return EXIT_SKIPPED
    try:
        # what was true before the claim may not be now: another worker may have finished it
        previous = read_status(folder)
        if not needs_run(previous, retry_failed):
            return EXIT_SKIPPED
        return _run_claimed(pipeline, case, claim, previous, threads)
    finally:
        claim.release()


def _run_claimed(
    pipeline: Pipeline,
    case: Case,
    claim: Claim,
    previous: dict[str, Any] | None,
    threads: int | None,
) -> int:
    folder = claim.folder
    clear_case_folder(folder)
    status: dict[str, Any] = {
        "case": case.id,
        "state": RUNNING,
        "host": claim.owner["host"],
        "pid": claim.owner["pid"],
        "started": claim.owner["started"],
        "attempt": int((previous or {}).get("attempt", 0)) + 1,
        "threads": threads,
        "otreg_version": __version__,
        **slurm_details(),
    }
    if previous and previous.get("state") in (FAILED, INTERRUPTED):
        status["previous"] = {k: previous.get(k) for k in ("state", "error", "host", "pid")}
    staging = folder / f"{STAGING}{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    # one try from the 'running' status on: a signal between two statements must still end
    # the case 'interrupted', never leave it 'running' under a worker that is gone
    try:
        write_status(folder, status)
        staging.mkdir()
        result = _register(pipeline, case, staging / "out", status)
        for entry in sorted((staging / "out").iterdir()):
            os.replace(entry, folder / entry.name)
        shutil.rmtree(staging, ignore_errors=True)
        status.update(result, state=DONE)
        code = EXIT_OK
    except Exception as err:  # every failure of a case is recorded, the batch goes on
        shutil.rmtree(staging, ignore_errors=True)
        if _signals_received:  # Interrupted, or what a library made of it (an ImportError)
            return _interrupted(folder, status, started)
        status.update(state=FAILED, error=describe_error(err))
        if not isinstance(err, OtregError):
            log.error("%s: %s", case.id, traceback.format_exc())
        code = EXIT_FAILED
    except Interrupted:
        shutil.rmtree(staging, ignore_errors=True)
        return _interrupted(folder, status, started)
    try:
        status["finished"] = time.time()
        status["seconds"] = round(time.perf_counter() - started, 3)
        write_status(folder, status)
    except Interrupted:  # the case ended before the signal came: its status says how
        write_status(folder, status)
    return code


def _interrupted(folder: Path, status: dict[str, Any], started: float) -> int:
    status.update(
        state=INTERRUPTED,
        error={"kind": "Interrupted", "message": f"stopped by {', '.join(_signals_received)}"},
        finished=time.time(),
        seconds=round(time.perf_counter() - started, 3),
    )
    write_status(folder, status)
    return EXIT_INTERRUPTED


def describe_error(err: BaseException) -> dict[str, str]:
    """{"kind", "message"} of an error: otreg's own message, or the OS's for a file problem."""
    if isinstance(err, OtregError):
        return {"kind": type(err).__name__, "message": str(err)}
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return {"kind": type(err).__name__, "message": f"{where}{err.strerror or err}"}
    return {"kind": type(err).__name__, "message": str(err) or repr(err)}


def _register(pipeline: Pipeline, case: Case, out: Path, status: dict[str, Any]) -> dict[str, Any]:
    """otreg.run (+ otreg.evaluate with landmarks) into ``out``; the status fields to record."""
    from ..runner import run

    steps: list[str] = []

    def on_step(text: str) -> None:
        steps.append(text)
        log.info("%s", text)

    done = run(
        case.source,
        case.target,
        out,
        pipeline.config,
        overrides=case_overrides(pipeline, case),
        on_step=on_step,
        argv=[sys.executable, "-m", "otreg.batch.worker", str(pipeline.path), case.id],
    )
    fields: dict[str, Any] = {
        "preset": done.preset["name"],
        "config_hash": hashlib.sha256(done.config.to_toml().encode()).hexdigest()[:16],
        "run_seconds": round(done.seconds, 3),
        "times": done.registration.metrics.get("times"),
    }
    if case.source_landmarks is not None and case.target_landmarks is not None:
        from ..evaluation import evaluate

        evaluation = evaluate(
            out,
            case.source_landmarks,
            case.target_landmarks,
            landmark_format=case.landmark_format or pipeline.landmarks.format,  # type: ignore[arg-type]
            spacing=case.spacing or pipeline.landmarks.spacing,
            jacobian=False,
        )
        (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    return fields


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .manifest import read_manifest
    from .pipeline import load_pipeline
    from .threads import current_threads, use_threads

    parser = argparse.ArgumentParser(prog="python -m otreg.batch.worker")
    parser.add_argument("pipeline")
    parser.add_argument("case")
    parser.add_argument("--retry-failed", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpus", default="", help="comma-separated CPU ids to run on")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, outside_imports(_interrupt))
    signal.signal(signal.SIGINT, outside_imports(_interrupt))
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {host_name()} pid {os.getpid()} {args.case}: %(message)s",
        stream=sys.stderr,
    )
    cpus = [int(c) for c in args.cpus.split(",") if c]
    try:
        use_threads(args.threads, cpus or None)
        pipeline = load_pipeline(args.pipeline)
        cases = {case.id: case for case in read_manifest(pipeline.manifest)}
        if args.case not in cases:
            log.error("%s: no case %r in %s", args.pipeline, args.case, pipeline.manifest)
            return 2
        return run_case(
            pipeline, cases[args.case], retry_failed=args.retry_failed, threads=current_threads()
        )
    except Interrupted:
        return EXIT_INTERRUPTED
    except OtregError as err:
        log.error("%s", err)
        return 2
    except OSError as err:
        log.error("%s", describe_error(err)["message"])
        return 2


if __name__ == "__main__":
    sys.exit(main())
