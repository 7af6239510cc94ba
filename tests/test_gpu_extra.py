"""pykeops is the optional GPU backend (the ``gpu`` extra): the CPU path never needs it, a GPU
without it falls back to torch blocks with a warning, and asking for KeOps without it is a
ConfigError that says how to install it."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from otreg import gpu
from otreg.errors import ConfigError
from otreg.ot import kernels

REPO = Path(__file__).resolve().parents[1]


def test_the_cpu_path_never_imports_pykeops_or_the_solver_from_transforms():
    script = (
        "import sys, numpy as np\n"
        "sys.modules['pykeops'] = None  # any import of it fails\n"
        "from otreg.transforms.field import KernelField\n"
        "field = KernelField(np.random.rand(50, 3), np.random.rand(50, 3), np.ones(50), 0.3)\n"
        "field(np.random.rand(20, 3))\n"
        "assert not [m for m in sys.modules if m.startswith('otreg.ot')], 'solver imported'\n"
        "import torch\n"
        "from otreg.ot import sinkhorn\n"
        "x = torch.rand(300, 3)\n"
        "assert sinkhorn(x, x + 0.01, blur=0.05).backend == 'torch'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_gpu_without_pykeops_uses_torch_blocks_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(kernels, "keops_installed", lambda: False)
    gpu.warn_no_keops.cache_clear()
    with caplog.at_level(logging.WARNING, logger="otreg"):
        assert kernels.choose_backend("auto", torch.device("cuda")) == "torch"
    assert "pip install 'otreg[gpu]'" in caplog.text
    assert kernels.choose_backend("auto", torch.device("cpu")) == "torch"


def test_the_keops_backend_without_pykeops_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pykeops", None)
    monkeypatch.setitem(sys.modules, "pykeops.torch", None)
    with pytest.raises(ConfigError, match=r"otreg\[gpu\]"):
        kernels.make_kernel("keops", torch.rand(5, 3), torch.rand(4, 3), 1.0)
