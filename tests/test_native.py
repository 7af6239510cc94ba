"""otreg's compiled kernels (otreg.native): built by the package build, loaded without a
compiler, their C++ errors turned into otreg's, and named in run.json and metrics.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import SOURCE, TARGET

import otreg
from otreg import native
from otreg.errors import NativeKernelError, OtregError, OutOfMemoryError, SolverError

REPO = Path(__file__).resolve().parents[1]

needs_native = pytest.mark.skipif(
    not native.available(), reason="otreg's compiled kernels are not built (pip install -e .)"
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _python(script: str, env: dict[str, str] | None = None, timeout: float = 600):
    """Run ``script`` in a fresh interpreter with this tree first on the path."""
    base = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_the_extension_is_built():
    """The README's install builds the kernels: a missing or stale extension fails here (the
    tests of the compiled paths elsewhere are skipped then, the run falls back loudly)."""
    assert native.available(), (
        f"otreg's compiled kernels are not usable: {native.info()['reason']}; "
        "run `pip install -e .` (or `python setup.py build_ext --inplace`)"
    )
    record = native.info()
    assert record["backend"] == "native"
    assert record["version"] == otreg.__version__
    assert "-O3" in record["build_flags"] and record["compiler"]
    assert len(record["source_sha256"]) == 64


@needs_native
def test_compiled_c_transform_and_truncation_agree_with_brute_force():
    from otreg.native import kernels

    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 3, generator=g, dtype=torch.float64)
    y = torch.rand(200, 3, generator=g, dtype=torch.float64)
    pot = torch.rand(200, generator=g, dtype=torch.float64) * 0.01
    cost = torch.cdist(x, y) ** 2 / 2
    assert torch.allclose(kernels.c_transform(x, y, pot), (cost - pot).amin(1), atol=1e-12)

    eps, truncation = 0.01, 5.0
    z = pot / eps - cost / eps
    crow, col, kept_cost, vals, row_max = kernels.truncate(
        x, y.T.contiguous(), pot / eps, z.logsumexp(1), 1 / eps, truncation
    )
    assert torch.allclose(row_max, z.amax(1))
    kept = torch.sparse_csr_tensor(crow, col, vals, z.shape, check_invariants=True).to_dense()
    near = z >= z.amax(1, keepdim=True) - truncation
    assert bool(((kept > 0) == near).all())
    assert torch.allclose(kept[near], (z - row_max[:, None]).exp()[near])
    assert len(kept_cost) == int(near.sum())


@needs_native
def test_wrong_dtypes_are_refused_not_copied():
    """An output written into a silent converted copy would be lost: mixed dtypes are an error."""
    from otreg.native import kernels

    x = torch.rand(10, 3, dtype=torch.float64)
    with pytest.raises(TypeError):
        kernels.c_transform(x.float(), x, torch.zeros(10, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        kernels.c_transform(x, x, torch.zeros(9, dtype=torch.float64))


def test_kernel_errors_become_otreg_errors():
    """What the C++ code throws, as the extension raises it (bad_alloc: MemoryError; kernels
    too large for int32 indices: OverflowError; others: RuntimeError), becomes an OtregError
    that names the kernel and what to do."""
    from otreg.native.kernels import translated_errors

    memory = pytest.raises(OutOfMemoryError, match="out of memory in otreg's compiled kernel")
    with memory, translated_errors("truncate", "10 x 10 points"):
        raise MemoryError("std::bad_alloc")
    with pytest.raises(SolverError, match="larger blur"), translated_errors("kernel_pair", "5"):
        raise OverflowError("the truncated kernels would hold 3000000000 entries")
    with (
        pytest.raises(NativeKernelError, match="select failed .*: boom"),
        translated_errors("select", "5 entries"),
    ):
        raise RuntimeError("boom")
    assert issubclass(OutOfMemoryError, OtregError) and issubclass(NativeKernelError, SolverError)


@needs_native
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_out_of_memory_inside_the_kernels_is_an_otreg_error():
    """A kernel whose allocation fails (here under an address-space limit, as `ulimit -v` sets
    on clusters) raises OutOfMemoryError in the caller: the interpreter lives on (it aborted,
    exit 134, when the exception escaped a worker thread)."""
    script = """
        import resource, sys, torch
        torch.set_num_threads(2)  # the failure happens in a worker thread too
        from otreg.errors import OutOfMemoryError
        from otreg.native import kernels
        n = 20_000  # every pair kept: 4e8 entries, 4.8 GB
        x = torch.rand(n, 3)
        y_t = torch.rand(3, n)
        h, lse = torch.zeros(n), torch.zeros(n)
        size_kb = next(int(line.split()[1]) for line in open("/proc/self/status")
                       if line.startswith("VmSize"))
        limit = size_kb * 1024 + (512 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            kernels.truncate(x, y_t, h, lse, 1.0, float("inf"))
        except OutOfMemoryError as err:
            print("caught:", err)
            sys.exit(0)
        sys.exit(5)
    """
    result = _python(script)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr[-3000:])
    assert "out of memory in otreg's compiled kernel truncate (20000 x 20000 points)" in (
        result.stdout
    )


def test_the_cli_reports_out_of_memory_in_one_line(tmp_path, monkeypatch, capsys):
    from otreg import cli, runner

    def out_of_memory(*args, **kwargs):
        raise OutOfMemoryError("out of memory in otreg's compiled kernel truncate (3 x 3 points)")

    monkeypatch.setattr(runner, "run", out_of_memory)
    monkeypatch.setattr(
        sys, "argv", ["otreg", "register", str(SOURCE), str(TARGET), "-o", str(tmp_path / "o")]
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [
        "otreg: error: out of memory in otreg's compiled kernel truncate (3 x 3 points)"
    ]


@needs_native
def test_no_compiler_at_run_time_and_run_json_names_the_kernels(tmp_path):
    """No compiler and no writable cache: the solver still runs on the compiled kernels, and
    run.json and metrics.json name them (nothing is compiled at run time)."""
    shims = tmp_path / "bin"
    shims.mkdir()
    invoked = tmp_path / "compiler_invoked"
    for name in ("c++", "g++", "gcc", "cc", "clang", "clang++"):
        shim = shims / name
        shim.write_text(f'#!/bin/sh\necho "$0 $*" >> {invoked}\nexit 1\n')
        shim.chmod(0o755)
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    (read_only / "not_a_folder").write_text("")
    read_only.chmod(0o555)
    env = {
        "CXX": str(tmp_path / "missing" / "c++"),
        "CC": str(tmp_path / "missing" / "cc"),
        "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
        # the old run-time build's cache: below a regular file, unwritable even for root
        "OTREG_CACHE_DIR": str(read_only / "not_a_folder" / "otreg"),
        "HOME": str(read_only),
    }
    out = tmp_path / "out"
    script = f"""
        import json, sys
        import torch
        from otreg import native
        from otreg.native import kernels
        import importlib
        sinkhorn_module = importlib.import_module("otreg.ot.sinkhorn")
        calls = []
        pair = kernels.kernel_pair
        def counted(*args, **kwargs):
            calls.append(1)
            return pair(*args, **kwargs)
        kernels.kernel_pair = counted
        sinkhorn_module.DENSE_PAIRS = 10_000  # a small problem on the multiscale path
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(1500, 3, generator=g), torch.rand(1500, 3, generator=g) + 0.05
        solution = sinkhorn_module.sinkhorn(x, y, blur=0.02, multiscale=True)
        assert solution.backend == "multiscale", solution.backend
        assert calls, "the multiscale solve did not use the compiled kernels"
        assert native.info()["backend"] == "native", native.info()
        from otreg.cli import main
        sys.argv = ["otreg", "register", {str(SOURCE)!r}, {str(TARGET)!r}, "-o", {str(out)!r},
                    "--points", "1000", "--set", "rigid.points=400",
                    "--set", "rigid.iterations=5", "--set", "rigid.principal_axes=false",
                    "--set", "solver.max_iter=50", "--set", "output.grid_spacing=24",
                    "--set", "output.report_pictures=false"]
        main()
    """
    result = _python(script, env)
    read_only.chmod(0o755)
    assert result.returncode == 0, (result.stdout, result.stderr[-3000:])
    assert not invoked.exists(), invoked.read_text()
    assert "cannot be imported" not in result.stderr
    for name in ("run.json", "metrics.json"):
        kernels = json.loads((out / name).read_text())["kernels"]
        assert kernels["backend"] == "native", (name, kernels)
        assert kernels["build_flags"] == native.info()["build_flags"]
    # the page's provenance names them too
    assert native.info()["build_flags"] in (out / "report.html").read_text()


def test_a_missing_extension_is_said_loudly_and_recorded(tmp_path):
    """Without the extension (here: its import blocked) the run warns once, uses the torch
    kernels, and run.json says so with the reason."""
    out = tmp_path / "out"
    script = f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "otreg.native._kernels":
                    raise ImportError("blocked by the test")
        sys.meta_path.insert(0, Block())
        from otreg.cli import main
        sys.argv = ["otreg", "register", {str(SOURCE)!r}, {str(TARGET)!r}, "-o", {str(out)!r},
                    "--points", "600", "--set", "rigid.points=300",
                    "--set", "rigid.iterations=3", "--set", "rigid.principal_axes=false",
                    "--set", "solver.max_iter=30", "--set", "output.grid_spacing=24",
                    "--set", "output.dense_field=false", "--set", "output.report_pictures=false"]
        main()
    """
    result = _python(script)
    assert result.returncode == 0, (result.stdout, result.stderr[-3000:])
    assert result.stderr.count("otreg.native._kernels cannot be imported") == 1, result.stderr
    for name in ("run.json", "metrics.json"):
        kernels = json.loads((out / name).read_text())["kernels"]
        assert kernels["backend"] == "torch", (name, kernels)
        assert "blocked by the test" in kernels["reason"]


def test_the_torch_kernels_can_be_chosen(monkeypatch):
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    native._loaded.cache_clear()
    try:
        assert native.info() == {"backend": "torch", "reason": "disabled by OTREG_NATIVE=0"}
        assert not native.usable(torch.zeros(3))
    finally:
        monkeypatch.delenv(native.DISABLE_ENV)
        native._loaded.cache_clear()
