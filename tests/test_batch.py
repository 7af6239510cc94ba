"""otreg batch: pipeline files, manifests, local runs with resume, retries, takeover, shards and
concurrent runners, on small registrations of the sample pair (each case one worker process)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from otreg.batch import load_pipeline, read_manifest, run_batch, validate
from otreg.batch.claims import CLAIM, owner_alive, try_claim
from otreg.batch.local import parse_shard, shard_cases
from otreg.batch.status import read_status
from otreg.batch.summary import batch_status, summarize
from otreg.batch.threads import thread_environment, threads_per_worker, worker_cpus
from otreg.errors import ConfigError, OutputError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def batch_cli(*args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otreg", "batch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(**env),
        cwd=REPO,
    )


def start_batch(path: Path, *args: str) -> subprocess.Popen:
    """``otreg batch run PATH ARGS`` in the background (ARGS default: one job)."""
    return subprocess.Popen(
        [sys.executable, "-m", "otreg", "batch", "run", str(path), *(args or ("--jobs", "1"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )


def status_of(out: Path, case: str) -> dict:
    return json.loads((out / case / "status.json").read_text())


#: hidden files that belong in a case folder: the claim, otreg's marker of its output folders
KEPT = {CLAIM, ".otreg"}


def hidden_leftovers(out: Path) -> list[Path]:
    """Temporary files or folders left in OUT or a case folder (claims aside)."""
    found = []
    for folder in [out, *(p for p in out.iterdir() if p.is_dir())]:
        found += [p for p in folder.iterdir() if p.name.startswith(".") and p.name not in KEPT]
    return found


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# ----------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("case,source\na,x.vtk\n", r"line 1: missing column\(s\) target"),
        ("case,source,target\na,x,y\na,x,y\n", r"line 3, column 'case': duplicate case id 'a'"),
        ("case,source,target,colour\na,x,y,red\n", r"column 'colour': unknown column"),
        ("case,source,target\n.hidden,x,y\n", r"line 2, column 'case'"),
        ("case,source,target\na,,y\n", r"line 2, column 'source': empty"),
        ("case,source,target\na,x\n", r"line 2: 2 cells, the header has 3"),
        ("case,source,target,spacing\na,x,y,1 2\n", r"column 'spacing'"),
        ("case,source,target,source_landmarks\na,x,y,l.txt\n", r"both source_landmarks"),
        ("case,source,target\n", r"no cases"),
    ],
)
def test_a_bad_manifest_is_one_error_naming_file_row_and_column(tmp_path, manifest, expected):
    path = tmp_path / "cases.csv"
    path.write_text(manifest)
    with pytest.raises(ConfigError, match=expected) as err:
        read_manifest(path)
    assert str(path) in str(err.value)


def test_manifest_paths_are_relative_to_it_and_tsv_overrides_are_per_case(tmp_path):
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "cases.tsv"
    path.write_text(
        "# a comment\ncase\tsource\ttarget\tinput.label\tspacing\n"
        "p1\ta.nii.gz\tb.nii.gz\t[1, 2]\t1 1 2.5\np2\ta.nii.gz\tb.nii.gz\t\t\n"
    )
    first, second = read_manifest(path)
    assert first.source == tmp_path / "m" / "a.nii.gz"
    assert first.overrides == ("input.label=[1, 2]",) and second.overrides == ()
    assert first.spacing == (1.0, 1.0, 2.5) and second.spacing is None
    assert first.row == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('output = "o"\n', "manifest: missing"),
        ('manifest = "c.csv"\noutput = "o"\ncolour = 1\n', "unknown key 'colour'"),
        ('manifest = "c.csv"\noutput = "o"\n[run]\njobs = 0\n', "run.jobs"),
        ('manifest = "c.csv"\noutput = "o"\n[registration]\nconfig = "nope"\n', "neither a file"),
        ('manifest = "c.csv"\noutput = "o"\n[registration]\nset = ["x"]\n', "section.key=value"),
        ("manifest = \n", "not valid TOML"),
    ],
)
def test_a_bad_pipeline_is_one_clear_error(tmp_path, text, expected):
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_pipeline(path)


def test_pipeline_paths_are_relative_to_the_file(tmp_path, batch_study):
    pipeline = load_pipeline(batch_study(tmp_path / "study", ["a"]))
    assert pipeline.manifest == tmp_path / "study" / "cases.csv"
    assert pipeline.output == tmp_path / "study" / "out"
    assert pipeline.config == "lung_vessels"


def test_validate_lists_every_problem_with_its_case_and_run_writes_nothing(tmp_path, batch_study):
    path = batch_study(tmp_path, ["a", "b", "c"])
    manifest = tmp_path / "cases.csv"
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1].replace("exhale_vessels.vtk", "missing.vtk", 1)  # a: a missing file
    lines[3] = lines[3].rsplit(",", 1)[0] + ",-5"  # c: a bad per-case seed
    manifest.write_text("\n".join(lines) + "\n")
    _, cases, problems = validate(path)
    assert len(cases) == 3
    assert {p.case for p in problems} == {"a", "c"}
    assert any("missing.vtk: no such file" in p.message for p in problems)
    done = batch_cli("validate", str(path))
    assert done.returncode == 2
    assert "a: source" in done.stderr and "c: registration config" in done.stderr
    run = batch_cli("run", str(path))
    assert run.returncode == 2, run.stderr
    assert "2 problem(s), nothing was run" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_shards_split_the_manifest_round_robin():
    assert parse_shard(None) == (1, 1) and parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "1", "a/b"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    cases = list(range(7))
    assert shard_cases(cases, (1, 3)) == [0, 3, 6]  # type: ignore[arg-type]
    shards = [shard_cases(cases, (i, 3)) for i in (1, 2, 3)]  # type: ignore[arg-type]
    assert sorted(c for shard in shards for c in shard) == cases


def test_threads_fit_the_allocation(monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert threads_per_worker(1) == cpus
    assert threads_per_worker(cpus * 2) == 1
    assert threads_per_worker(2, threads=3) == 3
    assert worker_cpus(0, 1, cpus) == sorted(os.sched_getaffinity(0))
    if cpus >= 2:
        assert worker_cpus(1, 2, 1) == sorted(os.sched_getaffinity(0))[1:2]  # its own core
    assert worker_cpus(0, cpus + 1, 1) is None  # more threads than CPUs: not pinned
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert threads_per_worker(1) == 1
    if cpus >= 2:  # Slurm gave 1 CPU but did not bind: other tasks see the same mask
        assert worker_cpus(0, 1, 1) is None
    env = thread_environment(2)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OTREG_THREADS"] == "2"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # waiting threads sleep, not spin


def test_claims_are_exclusive_and_a_dead_owner_is_taken_over(tmp_path):
    first = try_claim(tmp_path / "case")
    assert first is not None
    assert try_claim(tmp_path / "case") is None  # we are alive: held
    first.release()
    assert not (tmp_path / "case" / CLAIM).exists()
    stale = {"host": first.owner["host"], "pid": dead_pid(), "started": 0, "token": "x"}
    (tmp_path / "case" / CLAIM).write_text(json.dumps(stale))
    assert not owner_alive(stale)
    taken = try_claim(tmp_path / "case")
    assert (
        taken is not None
        and json.loads((tmp_path / "case" / CLAIM).read_text())["pid"] == os.getpid()
    )
    other_host = {**stale, "host": "elsewhere.example"}
    assert owner_alive(other_host)  # nothing here can tell: left alone
    assert [p.name for p in (tmp_path / "case").iterdir()] == [CLAIM]


def test_an_unwritable_output_root_is_one_clear_error(tmp_path, batch_study):
    path = batch_study(tmp_path, ["a"])
    (tmp_path / "blocker").write_text("a file, not a folder")
    path.write_text(path.read_text().replace('output = "out"', 'output = "blocker/out"'))
    with pytest.raises(OutputError, match="cannot create the output folder"):
        run_batch(path)
    done = batch_cli("run", str(path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "blocker/out: cannot create the output folder" in done.stderr


# ----------------------------------------------------------------------------- runs
def test_run_resume_and_retry_failed(tmp_path, batch_study):
    """jobs 2 over three cases, one of them corrupt: it fails alone, with its error; a rerun
    runs nothing; --retry-failed runs only it, once its input is good again."""
    path = batch_study(tmp_path, ["a", "b", "c"])
    corrupt = tmp_path / "corrupt.vtk"
    corrupt.write_text("# vtk DataFile Version 4.2\nnot a mesh\n")
    manifest = tmp_path / "cases.csv"
    manifest.write_text(
        manifest.read_text().replace(f"b,{SAMPLE / 'inhale_vessels.vtk'}", f"b,{corrupt}")
    )
    out = tmp_path / "out"
    done = batch_cli("run", str(path), "--jobs", "2")
    assert done.returncode == 3, done.stderr
    assert "2 ok, 0 done before, 1 failed" in done.stdout
    assert [status_of(out, c)["state"] for c in "abc"] == ["ok", "failed", "ok"]
    error = status_of(out, "b")["error"]
    assert error["kind"] == "InputError" and str(corrupt) in error["message"]
    assert "Traceback" not in done.stderr
    for case in "ac":
        status = status_of(out, case)
        # two workers share the CPUs: torch's pool in each worker holds half of them
        assert status["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
        assert status["config_hash"] and status["seconds"] > 0
        assert (out / case / "transform.npz").is_file() and (
            out / case / "evaluation.json"
        ).is_file()
    assert not (out / "b" / "transform.npz").exists()
    assert hidden_leftovers(out) == []
    rows = {row["case"]: row for row in summarize(out)}
    assert rows["b"]["outlier"] == "failed" and rows["b"]["error"].startswith("InputError")
    assert rows["a"]["tre_after_mm"] < rows["a"]["tre_before_mm"]
    assert (out / "summary.csv").is_file() and (out / "index.html").is_file()
    assert 'href="a/report.html"' in (out / "index.html").read_text()

    stamps = {c: (out / c / "status.json").stat().st_mtime_ns for c in "abc"}
    again = run_batch(path, jobs=2)
    assert again.ok == [] and sorted(again.already_done) == ["a", "c"]
    assert again.skipped_failed == ["b"] and again.exit_code == 3
    assert {c: (out / c / "status.json").stat().st_mtime_ns for c in "abc"} == stamps

    corrupt.write_bytes((SAMPLE / "inhale_vessels.vtk").read_bytes())
    retried = run_batch(path, jobs=2, retry_failed=True)
    assert retried.ok == ["b"] and retried.exit_code == 0
    status = status_of(out, "b")
    assert status["state"] == "ok" and status["attempt"] == 2
    assert status["previous"]["state"] == "failed"
    report = batch_status(out)
    assert report["counts"]["ok"] == 3 and report["failed"] == []
    shown = batch_cli("status", str(path))
    assert shown.returncode == 0 and "3 case(s): 3 ok" in shown.stdout


def test_a_dead_running_owner_is_taken_over_and_a_live_one_left_alone(tmp_path, batch_study):
    path = batch_study(tmp_path, ["dead", "alive"])
    out = tmp_path / "out"
    for case, pid in (("dead", dead_pid()), ("alive", os.getpid())):
        (out / case).mkdir(parents=True)
        owner = {"host": os.uname().nodename, "pid": pid, "started": time.time(), "token": case}
        (out / case / CLAIM).write_text(json.dumps(owner))
        (out / case / "status.json").write_text(json.dumps({**owner, "state": "running"}))
        (out / case / ".staging-0123abcd").mkdir()  # what a killed worker leaves
    result = run_batch(path, jobs=1)
    assert result.ok == ["dead"] and result.elsewhere == ["alive"] and result.exit_code == 0
    assert status_of(out, "dead")["state"] == "ok"
    assert not (out / "dead" / ".staging-0123abcd").exists()
    assert status_of(out, "alive")["state"] == "running"


def test_workers_are_forks_of_a_server_that_imported_the_libraries(
    tmp_path, batch_study, monkeypatch
):
    """Where the platform has a forkserver, no worker is a new interpreter (which would import
    torch and otreg again for every case): each is a fork of the process's server, whose
    workers find torch and otreg imported, and which writes the same statuses and logs."""
    import multiprocessing

    from otreg.batch import forking

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no forkserver on this platform: the workers are new interpreters")

    def no_new_interpreter(*args, **kwargs):
        raise AssertionError(f"a worker started as a new interpreter: {args}")

    monkeypatch.setattr("otreg.batch.local.subprocess.Popen", no_new_interpreter)
    path = batch_study(tmp_path, ["f1", "f2"], landmarks=False)
    result = run_batch(path, jobs=2)
    assert sorted(result.ok) == ["f1", "f2"] and result.exit_code == 0
    preloaded = forking.server_environment()
    assert preloaded is not None
    context = forking.fork_context(preloaded)
    assert context is not None
    with context.Pool(1) as pool:
        assert pool.apply(_imported, (["torch", "otreg.pipeline"],)) == [True, True]
    out = tmp_path / "out"
    for case in ("f1", "f2"):
        assert status_of(out, case)["state"] == "ok"
        assert (out / "logs" / f"{case}.log").read_text().count(": loading") == 1


def test_a_worker_the_server_cannot_fork_starts_as_a_new_interpreter(
    tmp_path, batch_study, monkeypatch, caplog
):
    import multiprocessing.context

    def refuse(self):
        raise OSError("fork refused")

    monkeypatch.setattr(multiprocessing.context.ForkServerProcess, "start", refuse)
    path = batch_study(tmp_path, ["n1"], landmarks=False)
    result = run_batch(path, jobs=1)
    assert result.ok == ["n1"] and result.exit_code == 0
    assert status_of(tmp_path / "out", "n1")["state"] == "ok"
    if "forkserver" in multiprocessing.get_all_start_methods():
        assert "could not start a worker (fork refused)" in caplog.text


def _imported(names: list[str]) -> list[bool]:
    return [name in sys.modules for name in names]


def test_shards_and_two_concurrent_runs_never_run_a_case_twice(tmp_path, batch_study):
    path = batch_study(tmp_path, ["s1", "s2", "s3", "s4"])
    out = tmp_path / "out"
    first = batch_cli("run", str(path), "--shard", "2/2")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir() if (p / "status.json").exists()) == ["s2", "s4"]
    # two whole runs of the same pipeline at once: s1 and s3 are left, each runs once
    runners = [start_batch(path, "--jobs", "2") for _ in range(2)]
    outputs = [runner.communicate(timeout=600) for runner in runners]
    assert [runner.returncode for runner in runners] == [0, 0], outputs
    ran = sum(int(stdout.split(" ok,")[0]) for stdout, _ in outputs)
    assert ran == 2, outputs
    for case in ("s1", "s2", "s3", "s4"):
        status = status_of(out, case)
        assert status["state"] == "ok" and status["attempt"] == 1
    loaded = [
        line
        for case in ("s1", "s3")
        for line in (out / "logs" / f"{case}.log").read_text().splitlines()
        if line.endswith(": loading")
    ]
    assert len(loaded) == 2  # each case's registration started exactly once


def _wait_for(predicate, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _running(out: Path) -> list[dict]:
    found = []
    for status in out.glob("*/status.json"):
        try:
            value = json.loads(status.read_text())
        except ValueError:
            continue
        if value.get("state") == "running":
            found.append(value)
    return found


def test_killed_workers_and_a_terminated_batch_resume_exactly_the_unfinished_cases(
    tmp_path, batch_study
):
    path = batch_study(tmp_path, ["k1", "k2", "k3"])
    out = tmp_path / "out"
    # a worker killed with SIGKILL mid-case: the batch reports it, the case stays unfinished
    runner = start_batch(path)
    _wait_for(lambda: _running(out))
    victim = _running(out)[0]
    os.kill(victim["pid"], signal.SIGKILL)
    _stdout, stderr = runner.communicate(timeout=600)
    assert runner.returncode == 3, stderr
    assert "signal SIGKILL" in stderr
    assert status_of(out, victim["case"])["state"] == "running"  # its owner is dead
    assert batch_status(out)["counts"]["interrupted"] == 1
    finished = {
        c: (out / c / "status.json").stat().st_mtime_ns
        for c in ("k1", "k2", "k3")
        if status_of(out, c)["state"] == "ok"
    }
    assert len(finished) == 2

    rerun = run_batch(path)
    assert rerun.ok == [victim["case"]] and rerun.exit_code == 0
    assert status_of(out, victim["case"])["attempt"] == 2
    assert {c: (out / c / "status.json").stat().st_mtime_ns for c in finished} == finished
    assert hidden_leftovers(out) == []

    # the whole batch terminated (what Slurm's time limit and `timeout` send) with two cases
    # left to run: one interrupted, one never started; the finished one is left alone
    for case in ("k2", "k3"):
        (out / case / "status.json").unlink()
    finished = {"k1": (out / "k1" / "status.json").stat().st_mtime_ns}
    runner = start_batch(path)
    _wait_for(lambda: _running(out))
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=600)
    assert runner.returncode == 143, stderr
    # the running case is interrupted (unless it ended just before the signal came), and its
    # worker says so, even when the signal came while it imported VTK to read its clouds (an
    # exception raised there crashed the worker: otreg/signals.py)
    states = {c: (read_status(out / c) or {}).get("state") for c in ("k2", "k3")}
    assert "running" not in states.values() and set(states.values()) != {"ok"}, states
    assert hidden_leftovers(out) == []
    unfinished = sorted(c for c, s in states.items() if s != "ok")
    resumed = run_batch(path, jobs=2)
    assert sorted(resumed.ok) == unfinished and resumed.exit_code == 0
    assert {"k1": (out / "k1" / "status.json").stat().st_mtime_ns} == finished
    assert hidden_leftovers(out) == []


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_a_job_cancelled_as_a_whole_reports_its_case_interrupted(tmp_path, batch_study):
    """Slurm's scancel and time limit send SIGTERM to every process of the job at once: the
    runner, its fork server and the worker. The server outlives the signal, so the worker's
    own exit (interrupted) reaches the runner, not a lost exit status."""
    if not Path("/proc/self/task").exists():
        pytest.skip("needs /proc to find the fork server")
    path = batch_study(tmp_path, ["t1"])
    out = tmp_path / "out"
    runner = start_batch(path)
    _wait_for(lambda: _running(out))
    worker = _running(out)[0]["pid"]
    servers = [
        pid
        for pid in _children(runner.pid)
        if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(servers) == 1, "the runner's fork server was not found"
    for pid in [runner.pid, *servers, worker]:
        os.kill(pid, signal.SIGTERM)
    _, stderr = runner.communicate(timeout=600)
    assert runner.returncode == 143, stderr
    assert status_of(out, "t1")["state"] in ("interrupted", "ok"), stderr
    assert "exit code 255" not in stderr, stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 320 kB tmpfs (room for statuses and logs, not for a case's outputs); skipped where
    mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_fails_each_case_with_one_clear_error(tmp_path, small_disk, batch_study):
    path = batch_study(tmp_path, ["f1", "f2"])
    path.write_text(path.read_text().replace('output = "out"', f'output = "{small_disk}/out"'))
    done = batch_cli("run", str(path), "--jobs", "1")
    assert done.returncode == 3, done.stderr
    out = small_disk / "out"
    for case in ("f1", "f2"):
        error = status_of(out, case)["error"]
        assert error["kind"] in ("OSError", "OutputError"), error
        assert re.search("No space left on device|disk space", error["message"]), error
        assert [p.name for p in (out / case).iterdir()] == ["status.json"]
    assert "Traceback" not in done.stderr


def test_a_read_only_output_root_is_one_clear_error(tmp_path, small_disk, batch_study):
    path = batch_study(tmp_path, ["r1"])
    path.write_text(path.read_text().replace('output = "out"', f'output = "{small_disk}"'))
    (small_disk / "logs").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    done = batch_cli("run", str(path))
    assert done.returncode == 2
    assert done.stderr.strip() == f"otreg: error: {small_disk}: the output folder is not writable"


def _fake_done_case(
    out: Path, case: str, residual: float, folding: float = 0.0, suspect: str | None = None
) -> None:
    (out / case).mkdir(parents=True)
    (out / case / "status.json").write_text(json.dumps({"state": "ok", "seconds": 10.0}))
    (out / case / "metrics.json").write_text(
        json.dumps(
            {
                "residual_before": {"mean_mm": 9.0},
                "residual_after": {"mean_mm": residual},
                "transported_mass": 0.9,
                "jacobian": {"min": 0.5 if folding == 0 else -0.1, "folding_fraction": folding},
                "checks": {
                    "flags": [{"level": "warn", "title": suspect, "detail": ""}] if suspect else []
                },
            }
        )
    )


def test_the_summary_flags_failed_folding_and_far_residuals(tmp_path):
    out = tmp_path / "out"
    for case, residual in (("a", 1.0), ("b", 1.1), ("c", 1.2), ("d", 4.0)):
        _fake_done_case(out, case, residual)
    _fake_done_case(out, "e", 1.0, folding=0.02)
    _fake_done_case(out, "h", 1.0, suspect="Low matched mass")
    (out / "f").mkdir()
    (out / "f" / "status.json").write_text(
        json.dumps({"state": "failed", "error": {"kind": "InputError", "message": "x.vtk: bad"}})
    )
    cases = ["a", "b", "c", "d", "e", "f", "g", "h"]
    rows = {row["case"]: row for row in summarize(out, cases)}
    assert {case: row["outlier"] for case, row in rows.items()} == {
        "a": None,
        "b": None,
        "c": None,
        "d": "residual > 3x median",
        "e": "folding",
        "f": "failed",
        "g": None,
        "h": "suspect",
    }
    assert rows["h"]["suspect"] == "Low matched mass"
    assert rows["g"]["status"] == "pending" and rows["f"]["error"] == "InputError: x.vtk: bad"
    report = batch_status(out, cases)
    assert report["counts"] == {"ok": 6, "failed": 1, "running": 0, "interrupted": 0, "pending": 1}
    assert report["median_seconds_per_case"] == 10.0 and report["estimated_seconds_left"] == 10.0
    shown = batch_cli("summary", str(out))
    assert shown.returncode == 0 and "7 case(s), 4 outlier(s)" in shown.stdout
    page = (out / "index.html").read_text()
    assert page.count('class="outlier"') == 4 and 'href="a/report.html"' in page


def test_fail_fast_starts_no_case_after_a_failure(tmp_path, batch_study):
    path = batch_study(tmp_path, ["x", "y", "z"])
    corrupt = tmp_path / "corrupt.vtk"
    corrupt.write_text("not a vtk file\n")
    manifest = tmp_path / "cases.csv"
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1].replace(str(SAMPLE / "exhale_vessels.vtk"), str(corrupt), 1)
    manifest.write_text("\n".join(lines) + "\n")
    result = run_batch(path, jobs=1, fail_fast=True)
    assert result.failed == ["x"] and result.not_started == ["y", "z"] and result.exit_code == 3
    assert not (tmp_path / "out" / "y").exists()


@pytest.mark.realdata
def test_dirlab_landmarks_give_the_tre_of_each_case(tmp_path, shared_data):
    dirlab = shared_data / "dirlab4dct"
    rows = ["case,source,target,source_landmarks,target_landmarks,spacing"]
    for case, spacing in ((1, "0.97 0.97 2.5"), (2, "1.16 1.16 2.5")):
        rows.append(
            f"case{case},{dirlab}/case{case}_exhale_points.vtk,{dirlab}/case{case}_inhale_points.vtk,"
            f"{dirlab}/case{case}_300_T50_xyz.txt,{dirlab}/case{case}_300_T00_xyz.txt,{spacing}"
        )
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    path = tmp_path / "pipeline.toml"
    path.write_text(
        'manifest = "cases.csv"\noutput = "out"\n[registration]\nconfig = "lung_points"\n'
        # the clouds' untagged coordinates are in the landmarks' frame: read them as they are
        'set = ["input.points=1000", "output.dense_field=false", "input.mesh_frame=\'ras\'"]\n'
        '[landmarks]\nformat = "dirlab"\n'
    )
    result = run_batch(path, jobs=2)
    assert result.exit_code == 0, [status_of(tmp_path / "out", c) for c in ("case1", "case2")]
    rows = summarize(tmp_path / "out")
    # read as DIR-LAB voxels with each case's spacing: the mean motion DIR-LAB publishes
    assert [round(row["tre_before_mm"], 2) for row in rows] == [3.89, 4.34]
    for row in rows:
        assert row["tre_after_mm"] < 0.75 * row["tre_before_mm"], row


def test_without_a_config_each_case_gets_the_preset_of_its_input_type(tmp_path, batch_study):
    path = batch_study(tmp_path, ["auto"], landmarks=False)
    path.write_text(path.read_text().replace('config = "lung_vessels"\n', ""))
    assert load_pipeline(path).config is None
    result = run_batch(path)
    assert result.ok == ["auto"]
    status = status_of(tmp_path / "out", "auto")
    assert status["preset"] == "lung_vessels"  # a vessel cloud with a radius array
    resolved = (tmp_path / "out" / "auto" / "config.resolved.toml").read_text()
    assert "points = 400" in resolved  # the pipeline's overrides on top of the preset
