"""Output folders are owned: never replace what otreg did not write, one writer at a time,
nothing partial left by a killed run, and the location checked before any work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import (
    FAST,
    assert_one_error,
    otreg_env,
    random_points,
    run_otreg,
    run_python,
    snapshot,
    write_txt,
)

from otreg.errors import OutputError
from otreg.io.output_folder import MARKER, check_output_location, output_lock


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    return (
        write_txt(data / "source.txt", random_points(200, seed=1)),
        write_txt(data / "target.txt", random_points(200, seed=1) + 2.0),
    )


def register(source, target, out, *extra, cwd):
    return run_otreg("register", str(source), str(target), "-o", str(out), *FAST, *extra, cwd=cwd)


def siblings(out: Path) -> list[str]:
    """Hidden temporary, backup or lock files of OUT beside it."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


# ----------------------------------------------------------------------------- --overwrite
def test_overwrite_refuses_the_folder_holding_the_inputs(tmp_path, pair):
    source, target = pair
    (source.parent / "notes.docx").write_bytes(b"someone's thesis")
    before = snapshot(source.parent)
    result = register(source, target, source.parent, "--overwrite", cwd=tmp_path)
    assert_one_error(result, str(source.parent), "input", "inside")
    assert snapshot(source.parent) == before


def test_overwrite_refuses_a_folder_otreg_did_not_write(tmp_path, pair):
    out = tmp_path / "results"
    out.mkdir()
    (out / "other_tool.csv").write_text("1,2,3\n")
    before = snapshot(out)
    result = register(*pair, out, "--overwrite", cwd=tmp_path)
    assert_one_error(result, str(out), "not an otreg output folder", MARKER)
    assert snapshot(out) == before and siblings(out) == []


def test_overwrite_refuses_an_otreg_folder_holding_an_input(tmp_path, pair):
    source, target = pair
    out = tmp_path / "out"
    assert register(source, target, out, cwd=tmp_path).returncode == 0
    moved_source = out / "source_copy.txt"
    moved_source.write_bytes(source.read_bytes())
    before = snapshot(out)
    result = register(moved_source, target, out, "--overwrite", cwd=tmp_path)
    assert_one_error(result, str(out), "inside")
    assert snapshot(out) == before


def test_overwrite_replaces_an_otreg_folder_and_marks_it(tmp_path, pair):
    out = tmp_path / "out"
    assert register(*pair, out, cwd=tmp_path).returncode == 0
    assert (out / MARKER).is_file()
    (out / "metrics.json").write_text("stale")
    result = register(*pair, out, "--overwrite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (out / "metrics.json").read_text() != "stale" and (out / MARKER).is_file()
    assert siblings(out) == []  # no lock, temporary or backup left


# ----------------------------------------------------------------------------- one writer
def test_a_second_run_on_a_locked_output_fails_at_once(tmp_path, pair):
    out = tmp_path / "out"
    with output_lock(out):  # as a run in progress holds it
        result = register(*pair, out, cwd=tmp_path)
        assert_one_error(result, str(out), "another otreg run", str(os.getpid()))
        assert not out.exists()
    assert siblings(out) == []


def test_two_concurrent_runs_cannot_both_succeed(tmp_path, pair):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "otreg", "register", str(pair[0]), str(pair[1])]
    command += ["-o", str(out), *FAST]
    runs = [
        subprocess.Popen(command, cwd=tmp_path, env=otreg_env(), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    for p in runs:
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] == 2, results
    loser = next(err for code, err in results if code == 2)
    # the loser either found OUT locked or found it written (then without --overwrite)
    assert "another otreg run" in loser or "--overwrite" in loser, loser
    assert (out / "transform.npz").is_file() and siblings(out) == []


def test_lock_is_reentrant_and_removed(tmp_path):
    out = tmp_path / "deep" / "out"
    with output_lock(out), output_lock(out):
        assert (tmp_path / "deep" / ".out.lock").is_file()
    assert list((tmp_path / "deep").iterdir()) == []


def test_a_failed_lock_removes_the_folders_it_created(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError), output_lock(out):
        raise RuntimeError
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- killed runs
def test_stale_temporary_folders_of_killed_runs_are_removed(tmp_path, pair):
    out = tmp_path / "out"
    stale = [tmp_path / ".out.tmp-deadbeef", tmp_path / ".out.old-0123abcd"]
    stale[0].mkdir()
    (stale[0] / MARKER).write_text("x")
    (stale[0] / "transform.npz").write_bytes(b"half")
    stale[1].mkdir()
    not_ours = tmp_path / ".out.tmp-mine"  # not a name otreg makes: left alone
    not_ours.mkdir()
    (not_ours / "x").write_text("x")
    assert register(*pair, out, cwd=tmp_path).returncode == 0
    assert siblings(out) == [".out.tmp-mine"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_termination_while_writing_leaves_nothing(tmp_path, pair, signame):
    """The signal arrives while the outputs are being written (the report is the last file)."""
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import otreg.report.outputs as outputs
        render = outputs._write_report
        def killed(*args):
            os.kill(os.getpid(), signal.{signame})
            return render(*args)
        outputs._write_report = killed
        from otreg.cli import main
        sys.argv = ["otreg", "register", *{[str(pair[0]), str(pair[1]), "-o", str(out), *FAST]!r}]
        main()
        """
    )
    result = run_python(script, tmp_path, timeout=300)
    signum = getattr(signal, signame)
    assert result.returncode == 128 + signum, result.stderr
    assert f"interrupted ({signame})" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and siblings(out) == []


# ----------------------------------------------------------------------------- location
def test_output_under_a_file_is_refused_before_loading(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    missing_input = tmp_path / "missing.txt"  # named only if the inputs were read first
    result = run_otreg(
        "register", str(missing_input), str(missing_input), "-o", str(blocker / "out"), cwd=tmp_path
    )
    assert_one_error(result, str(blocker), "is a file")
    assert blocker.read_text() == "x"


def test_output_name_too_long_is_refused_before_loading(tmp_path):
    out = tmp_path / ("x" * 300)
    missing_input = tmp_path / "missing.txt"
    result = run_otreg(
        "register", str(missing_input), str(missing_input), "-o", str(out), cwd=tmp_path
    )
    assert_one_error(result, "too long")
    assert list(tmp_path.iterdir()) == []


def test_output_in_a_read_only_folder_is_refused(tmp_path, monkeypatch):
    """Root may write anywhere, so the refusal is also checked with os.access saying no."""
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == read_only else real_access(p, mode)
    )
    with pytest.raises(OutputError, match="not writable"):
        check_output_location(read_only / "out" / "deeper", overwrite=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_read_only_folder_is_refused_by_the_command(tmp_path, pair):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        result = register(*pair, read_only / "out", cwd=tmp_path)
        assert_one_error(result, "not writable")
    finally:
        read_only.chmod(0o755)
