"""otreg batch slurm: the sbatch array script, and arrays submitted to a real one-node Slurm.

The session fixture runs tests/setup/slurm.sh, which installs (apt-get, as root) and starts
munge, slurmctld and slurmd on this machine; the tests are skipped, saying why, where that
cannot run (not root, no apt-get).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import machine_lock

from otreg.batch import load_pipeline
from otreg.batch.slurm import options_for, sbatch_script
from otreg.batch.status import effective_state, read_status

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "tests" / "setup" / "slurm.sh"
CASES = ["c1", "c2", "c3", "c4"]
SLURM_TABLE = "[slurm]\ncpus_per_task = 1\n"


def test_the_script_is_one_array_task_per_shard(tmp_path, batch_study):
    pipeline = load_pipeline(batch_study(tmp_path, CASES, landmarks=False, extra=SLURM_TABLE))
    options = options_for(
        pipeline, 4, array_parallelism=2, partition="short", time="00:30:00", mem="2G", gpus=1
    )
    script = sbatch_script(pipeline, options)
    assert script.startswith("#!/bin/bash\n")
    for line in (
        "#SBATCH --array=1-4%2",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --partition=short",
        "#SBATCH --time=00:30:00",
        "#SBATCH --mem=2G",
        "#SBATCH --gpus=1",
        f"#SBATCH --output={tmp_path / 'out' / 'logs'}/slurm-%A_%a.out",
    ):
        assert line in script.splitlines()
    assert "--shard ${SLURM_ARRAY_TASK_ID}/4 --jobs 1 --threads ${SLURM_CPUS_PER_TASK:-1}" in script
    assert options_for(pipeline, 4, shards=2).shards == 2
    assert options_for(pipeline, 4, shards=9).shards == 4  # never more tasks than cases


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    """The environment of Slurm's clients, once tests/setup/slurm.sh has a node idle."""
    try:
        with machine_lock("setup"):  # pytest -n: one worker installs and starts it
            done = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"tests/setup/slurm.sh could not run: {err}")
    if done.returncode == 3:
        pytest.skip(f"no Slurm here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    conf = done.stdout.strip().splitlines()[-1].removeprefix("SLURM_CONF=")
    env = {**os.environ, "SLURM_CONF": conf, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _otreg(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otreg", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def _queued(env, job: str) -> list[str]:
    done = subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True, env=env
    )
    return done.stdout.split("\n") if done.stdout.strip() else []


def _wait_for(predicate, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def _states(out: Path) -> dict[str, str]:
    """Each case's state as a runner sees it: 'running' with a dead worker is 'interrupted'
    (Slurm SIGKILLs what is still there KillWait seconds after the SIGTERM of scancel)."""
    return {case: effective_state(read_status(out / case)) for case in CASES}


def _submit(env, pipeline: Path) -> str:
    done = _otreg(env, "batch", "slurm", str(pipeline), "--submit")
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip()
    assert job.isdigit(), done.stdout
    return job


@pytest.mark.slurm
def test_an_array_runs_every_case_once(tmp_path, slurm_env, batch_study):
    pipeline = batch_study(tmp_path, CASES, landmarks=False, extra=SLURM_TABLE)
    out = tmp_path / "out"
    job = _submit(slurm_env, pipeline)
    assert (out / "batch.sbatch").is_file()
    _wait_for(lambda: not _queued(slurm_env, job))
    assert _states(out) == dict.fromkeys(CASES, "ok"), list((out / "logs").iterdir())
    for k, case in enumerate(CASES, start=1):
        status = json.loads((out / case / "status.json").read_text())
        assert status["slurm_array_job"] == job and status["attempt"] == 1
        assert (out / "logs" / f"slurm-{job}_{k}.out").is_file()
    # without accounting, squeue still knows how the tasks ended for a while
    ended = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"],
        capture_output=True,
        text=True,
        env=slurm_env,
    ).stdout.split()
    assert ended == ["COMPLETED"] * 4
    summary = _otreg(slurm_env, "batch", "summary", str(pipeline))
    assert summary.returncode == 0, summary.stderr
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 5 and all(",ok," in row for row in rows[1:])
    status = _otreg(slurm_env, "batch", "status", str(out), "--json")
    assert json.loads(status.stdout)["counts"]["ok"] == 4


@pytest.mark.slurm
def test_a_cancelled_array_resumes_to_completion(tmp_path, slurm_env, batch_study):
    pipeline = batch_study(tmp_path, CASES, landmarks=False, extra=SLURM_TABLE)
    out = tmp_path / "out"
    job = _submit(slurm_env, pipeline)
    _wait_for(lambda: "running" in _states(out).values())
    subprocess.run(["scancel", job], check=True, env=slurm_env)
    _wait_for(lambda: not _queued(slurm_env, job))
    before = _states(out)
    assert "running" not in before.values() and "failed" not in before.values(), before
    assert set(before.values()) != {"ok"}, "the array finished before scancel"
    done_before = {
        case: (out / case / "status.json").stat().st_mtime_ns
        for case, state in before.items()
        if state == "ok"
    }
    again = _submit(slurm_env, pipeline)
    _wait_for(lambda: not _queued(slurm_env, again))
    assert _states(out) == dict.fromkeys(CASES, "ok")
    assert {c: (out / c / "status.json").stat().st_mtime_ns for c in done_before} == done_before
    leftovers = [
        p
        for c in CASES
        for p in (out / c).iterdir()
        if p.name.startswith(".") and p.name != ".otreg"
    ]
    assert leftovers == []


@pytest.mark.slurm
def test_an_owner_on_another_node_is_dead_once_its_job_is_gone(slurm_env, monkeypatch):
    from otreg.batch.claims import owner_alive

    monkeypatch.setenv("SLURM_CONF", slurm_env["SLURM_CONF"])
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--wrap", "sleep 300", "-o", "/dev/null"],
        capture_output=True,
        text=True,
        env=slurm_env,
        check=True,
    )
    job = submitted.stdout.strip().split(";")[0]
    owner = {"host": "node-that-crashed.example", "pid": 1, "slurm_job": job}
    try:
        assert owner_alive(owner)  # pending or running: its worker may be at work
    finally:
        subprocess.run(["scancel", job], env=slurm_env, check=True)
    _wait_for(lambda: not _queued(slurm_env, job))
    assert not owner_alive(owner)
    assert not owner_alive({**owner, "slurm_job": "999999"})  # unknown to squeue
    assert owner_alive({**owner, "slurm_job": None})  # no job: nothing can tell
