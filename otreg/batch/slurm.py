"""Slurm job arrays: one array task per shard, each running ``otreg batch run --shard i/N``.

The script needs no Slurm accounting: each case's state lives in its ``status.json`` (see
``otreg batch status``), the array's in ``squeue``. The same shape works for SGE
(``#$ -t 1-N``, ``$SGE_TASK_ID``) and PBS Pro (``#PBS -J 1-N``, ``$PBS_ARRAY_INDEX``): see the
README.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, OtregError
from ..io.atomic import write_text_atomic
from .pipeline import Pipeline

SCRIPT_NAME = "batch.sbatch"


class SubmitError(OtregError):
    """sbatch is missing or refused the job."""


@dataclass(frozen=True)
class SlurmOptions:
    """The job's resources (None: left to the cluster's defaults)."""

    shards: int
    partition: str | None = None
    time: str | None = None
    cpus_per_task: int = 1
    mem: str | None = None
    gpus: int = 0
    array_parallelism: int = 0


def options_for(pipeline: Pipeline, n_cases: int, **given) -> SlurmOptions:
    """The pipeline's [slurm] table, overridden by the ``given`` values that are not None;
    shards 0 (or more than the cases): one per case."""
    table = pipeline.slurm.model_dump()
    table.update({k: v for k, v in given.items() if v is not None})
    shards = table["shards"] or n_cases
    table["shards"] = min(shards, n_cases)
    if table["cpus_per_task"] < 1 or table["gpus"] < 0 or table["array_parallelism"] < 0:
        raise ConfigError("--cpus-per-task must be >= 1, --gpus and --array-parallelism >= 0")
    return SlurmOptions(**table)


def sbatch_script(pipeline: Pipeline, options: SlurmOptions) -> str:
    """The text of the sbatch array script (bash)."""
    logs = pipeline.output / "logs"
    array = f"1-{options.shards}" + (
        f"%{options.array_parallelism}" if options.array_parallelism else ""
    )
    lines = [
        "#!/bin/bash",
        f"# otreg batch: {pipeline.path}",
        f"# {options.shards} array task(s), task i runs shard i/{options.shards} of the manifest.",
        "# Resubmitting it resumes: done cases are skipped, a dead worker's case is taken over.",
        f"#SBATCH --job-name=otreg-{pipeline.path.stem}",
        f"#SBATCH --array={array}",
        f"#SBATCH --cpus-per-task={options.cpus_per_task}",
        f"#SBATCH --output={logs}/slurm-%A_%a.out",
    ]
    if options.partition:
        lines.append(f"#SBATCH --partition={options.partition}")
    if options.time:
        lines.append(f"#SBATCH --time={options.time}")
    if options.mem:
        lines.append(f"#SBATCH --mem={options.mem}")
    if options.gpus:
        lines.append(f"#SBATCH --gpus={options.gpus}")
    command = [
        sys.executable,
        "-m",
        "otreg",
        "batch",
        "run",
        str(pipeline.path),
        "--shard",
        f"${{SLURM_ARRAY_TASK_ID}}/{options.shards}",
        "--jobs",
        "1",
        "--threads",
        "${SLURM_CPUS_PER_TASK:-1}",
    ]
    quoted = " ".join(part if "$" in part else shlex.quote(part) for part in command)
    lines += [
        "set -uo pipefail",
        # exit 3 (some cases failed) marks the task FAILED in squeue; the statuses say which
        f"exec {quoted}",
        "",
    ]
    return "\n".join(lines)


def write_script(pipeline: Pipeline, options: SlurmOptions) -> Path:
    """Write OUT/batch.sbatch (atomically); return its path."""
    from .local import check_output_root

    check_output_root(pipeline.output)
    path = pipeline.output / SCRIPT_NAME
    write_text_atomic(path, sbatch_script(pipeline, options))
    return path


def submit(script: Path) -> str:
    """``sbatch --parsable SCRIPT``; returns the job id.

    Raises:
        SubmitError: no sbatch on PATH, or sbatch failed (its message).
    """
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SubmitError("sbatch not found on PATH: run this on a Slurm login node")
    done = subprocess.run(
        [sbatch, "--parsable", str(script)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise SubmitError(f"sbatch {script}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]
