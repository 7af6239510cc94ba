"""run_batch(): the cases of a pipeline (or of one shard of it) on local worker processes.

Each case runs in its own ``python -m otreg.batch.worker`` process (:mod:`otreg.batch.worker`;
forked from a server that imported its libraries once where the platform allows:
:mod:`otreg.batch.forking`), at most ``jobs`` at once, each with its share of the CPUs
(:mod:`otreg.batch.threads`). The runner waits on its workers without polling. Done cases are skipped, so a rerun resumes; cases
are claimed by the workers themselves, so several runners (shards, two submissions) may share a
pipeline and never run a case twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OutputError
from .forking import ForkedWorker, start_worker
from .manifest import Case
from .pipeline import Pipeline
from .status import DONE, FAILED, INTERRUPTED, effective_state, needs_run, read_status
from .threads import thread_environment, threads_per_worker, worker_cpus
from .validate import validated
from .worker import EXIT_INTERRUPTED, EXIT_OK, EXIT_SKIPPED

log = logging.getLogger(__name__)

EXIT_SOME_FAILED = 3


@dataclass
class BatchResult:
    """What :func:`run_batch` did.

    Attributes:
        ok: cases done in this run; already_done: found done; failed: failed in this run (or
        killed); skipped_failed: failed before and not retried; elsewhere: taken by another
        worker; not_started: left after --fail-fast or an interruption.
    """

    ok: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped_failed: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)
    interrupted: int = 0  # the signal that stopped the batch, 0: none

    @property
    def exit_code(self) -> int:
        """0 every case of the shard ok (or running elsewhere), 3 some failed, 128 + the
        signal when interrupted (130 ^C, 143 SIGTERM)."""
        if self.interrupted:
            return 128 + self.interrupted
        return EXIT_SOME_FAILED if self.failed or self.skipped_failed or self.not_started else 0


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/N' (1 <= i <= N) -> (i, N); None -> (1, 1).

    Raises:
        ConfigError: anything else.
    """
    if text is None:
        return 1, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected i/N, e.g. 1/4") from None
    if not 1 <= index <= count:
        raise ConfigError(f"--shard {text!r}: i must be between 1 and N")
    return index, count


def shard_cases(cases: list[Case], shard: tuple[int, int]) -> list[Case]:
    """The cases of shard (i, N): every N-th case of the manifest, from the i-th."""
    index, count = shard
    return cases[index - 1 :: count]


def check_output_root(output: Path) -> None:
    """OUT exists (created) and is writable, else one OutputError."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        (output / "logs").mkdir(exist_ok=True)
    except OSError as err:
        raise OutputError(f"{output}: cannot create the output folder: {err.strerror}") from None
    if not os.access(output, os.W_OK | os.X_OK) or not os.access(output / "logs", os.W_OK):
        raise OutputError(f"{output}: the output folder is not writable")


Event = dict[str, Any]


def run_batch(
    pipeline_path: str | Path,
    *,
    jobs: int | None = None,
    shard: tuple[int, int] = (1, 1),
    retry_failed: bool | None = None,
    fail_fast: bool | None = None,
    threads: int | None = None,
    on_event: Callable[[Event], None] | None = None,
    summary: bool = True,
) -> BatchResult:
    """Run the cases of a pipeline file (of shard ``(i, N)`` of it) that are not done.

    Args:
        pipeline_path: the pipeline TOML (:mod:`otreg.batch.pipeline`).
        jobs, retry_failed, fail_fast, threads: override the pipeline's ``[run]`` table.
        shard: run only the cases of this shard (:func:`shard_cases`).
        on_event: called with {"event": "start" | "case", ...} as the batch goes (progress).
        summary: write OUT/summary.csv, summary.json and index.html at the end.

    Returns:
        A :class:`BatchResult` (its ``exit_code``: 0, 3 some failed, 130 / 143 interrupted).

    Raises:
        ConfigError: an invalid pipeline or manifest, or a case with a missing input (every
            problem listed), before anything runs.
        OutputError: OUT cannot be created or written.
    """
    pipeline, cases = validated(pipeline_path)
    settings = pipeline.run
    jobs = jobs or settings.jobs
    retry = settings.retry_failed if retry_failed is None else retry_failed
    stop_on_failure = settings.fail_fast if fail_fast is None else fail_fast
    check_output_root(pipeline.output)
    emit = on_event or (lambda event: None)
    result = BatchResult()
    todo: list[Case] = []
    for case in shard_cases(cases, shard):
        status = read_status(pipeline.output / case.id)
        if needs_run(status, retry):
            todo.append(case)
        elif effective_state(status) == DONE:
            result.already_done.append(case.id)
        elif effective_state(status) == FAILED:
            result.skipped_failed.append(case.id)
        else:
            result.elsewhere.append(case.id)
    # fewer cases than jobs: the CPUs are split between the workers that will run
    jobs = max(1, min(jobs, len(todo)))
    per_worker = threads_per_worker(jobs, threads or settings.threads or None)
    log.info(
        "%s: %d case(s) to run, %d done, %d failed before, %d jobs x %d thread(s)",
        pipeline.path,
        len(todo),
        len(result.already_done),
        len(result.skipped_failed),
        jobs,
        per_worker,
    )
    emit(
        {
            "event": "start",
            "total": len(todo),
            "done": len(result.already_done),
            "jobs": jobs,
            "threads": per_worker,
        }
    )
    _Pool(pipeline, jobs, per_worker, retry, stop_on_failure, emit, result).run(todo)
    if summary:
        from .summary import write_summary

        with contextlib.suppress(OSError):
            write_summary(pipeline.output, [c.id for c in cases])
    return result


class _Pool:
    """At most ``jobs`` worker processes; one thread per worker waits on it (no polling)."""

    def __init__(self, pipeline, jobs, threads, retry, fail_fast, emit, result):
        self.pipeline: Pipeline = pipeline
        self.jobs, self.threads, self.retry, self.fail_fast = jobs, threads, retry, fail_fast
        self.emit: Callable[[Event], None] = emit
        self.result: BatchResult = result
        self.finished: queue.Queue[tuple[int, Case, int, float]] = queue.Queue()
        self.running: dict[int, tuple[subprocess.Popen | ForkedWorker, Case]] = {}
        self.stopping = False

    def run(self, todo: list[Case]) -> None:
        pending = list(todo)
        free_slots = list(range(self.jobs))
        previous = {
            sig: signal.signal(sig, self._stop)
            for sig in (signal.SIGTERM, signal.SIGINT)
            if threading.current_thread() is threading.main_thread()
        }
        try:
            while pending or self.running:
                while pending and free_slots and not self.stopping:
                    self._start(pending.pop(0), free_slots.pop(0))
                if not self.running:
                    break
                slot, case, code, seconds = self.finished.get()  # blocks: no spinning
                del self.running[slot]
                free_slots.append(slot)
                self._record(case, code, seconds)
                if self.stopping or (self.fail_fast and self.result.failed):
                    self.result.not_started.extend(c.id for c in pending)
                    pending = []
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self, case: Case, slot: int) -> None:
        cpus = worker_cpus(slot, self.jobs, self.threads)
        argv = [str(self.pipeline.path), case.id, "--threads", str(self.threads)]
        if cpus:
            argv += ["--cpus", ",".join(map(str, cpus))]
        if self.retry:
            argv.append("--retry-failed")
        env = {**os.environ, **thread_environment(self.threads)}
        log_path = self.pipeline.output / "logs" / f"{case.id}.log"
        try:
            log_file = open(log_path, "ab")  # noqa: SIM115  (closed below, once passed on)
        except OSError as err:  # a full disk: the case's status will say what went wrong
            log.warning("%s: cannot write the log: %s", log_path, err.strerror)
            log_file = open(os.devnull, "ab")  # noqa: SIM115
        with log_file:
            process = start_worker(argv, Path(log_file.name), env) or subprocess.Popen(
                [sys.executable, "-m", "otreg.batch.worker", *argv],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,  # a ^C on the terminal reaches the runner, which forwards it
            )
        self.running[slot] = (process, case)
        started = time.perf_counter()
        threading.Thread(
            target=lambda: self.finished.put(
                (slot, case, process.wait(), time.perf_counter() - started)
            ),
            daemon=True,
        ).start()
        self.emit({"event": "case", "case": case.id, "state": "running"})

    def _record(self, case: Case, code: int, seconds: float) -> None:
        status = read_status(self.pipeline.output / case.id) or {}
        event: Event = {"event": "case", "case": case.id, "seconds": round(seconds, 2)}
        if code == EXIT_OK:
            self.result.ok.append(case.id)
            event["state"] = DONE
        elif code == EXIT_SKIPPED:
            state = effective_state(status)
            if state == DONE:
                self.result.already_done.append(case.id)
            elif state == FAILED:
                self.result.skipped_failed.append(case.id)
            else:
                self.result.elsewhere.append(case.id)
            event["state"] = "skipped"
        elif code == EXIT_INTERRUPTED or (self.stopping and code < 0):
            self.result.not_started.append(case.id)
            event["state"] = INTERRUPTED
        else:
            self.result.failed.append(case.id)
            event["state"] = FAILED
            error = status.get("error") if status.get("state") == FAILED else None
            event["error"] = (
                f"{error['kind']}: {error['message']}"
                if error
                else f"worker exited with {_describe_exit(code)} (see {self.pipeline.output / 'logs' / (case.id + '.log')})"
            )
        self.emit(event)

    def _stop(self, signum: int, frame: Any) -> None:
        """SIGTERM / SIGINT: pass it to every worker (they record 'interrupted'), start none."""
        self.stopping = True
        self.result.interrupted = signum
        for process, _ in list(self.running.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
