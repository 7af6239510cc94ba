"""The GPU path of the multiscale solver (``solver.kernels = "torch"``, the default on CUDA):
the same truncated kernels, potentials, plans and registrations as the compiled CPU kernels,
checked on the CPU by forcing it; the tests marked ``cuda`` run it on a GPU (skipped without
one)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import helpers
import pytest
import torch

import otreg
from otreg import native
from otreg.config import SolverConfig
from otreg.errors import SolverError
from otreg.io.landmarks import read_landmarks
from otreg.metrics import target_registration_error
from otreg.native.morton import curve_order
from otreg.ot import SolverOptions, device_kernels, sinkhorn
from otreg.ot.sparse import DeviceSparseKernel, truncated_pair, truncation_backend

needs_native = pytest.mark.skipif(
    not native.available(), reason="otreg's compiled kernels are not built (pip install -e .)"
)
cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)


def _cloud(kind: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3) points of a unit box: a uniform cube or a vessel-like tree of thin segments."""
    if kind == "cube":
        return torch.rand(n, 3, generator=gen)
    ends = torch.rand(24, 3, generator=gen)
    starts = torch.cat([torch.full((1, 3), 0.5), ends[:-1]])
    seg = torch.randint(0, 24, (n,), generator=gen)
    t = torch.rand(n, 1, generator=gen)
    return starts[seg] + t * (ends[seg] - starts[seg]) + 0.003 * torch.randn(n, 3, generator=gen)


def _pair(kind: str, n: int, seed: int = 0, weighted: bool = False):
    """x, y (n, 3) float32: a cloud and a smoothly deformed (7 %), resampled copy; weights."""
    gen = torch.Generator().manual_seed(seed)
    x, y = _cloud(kind, n, gen), _cloud(kind, n, gen)
    y = y + 0.07 * torch.sin(3 * y[:, [1, 2, 0]])
    if weighted:
        a, b = torch.rand(n, generator=gen) + 0.2, torch.rand(n, generator=gen) + 0.2
        return x, y, a / a.sum(), b / b.sum()
    return x, y, None, None


def _sorted(points: torch.Tensor) -> torch.Tensor:
    return points[curve_order(points)].contiguous()


# ------------------------------------------------------------------------- the kernels alone
@needs_native
@pytest.mark.parametrize("blur", [0.01, 0.05])
@pytest.mark.parametrize("rows_only", [False, True])
def test_the_torch_kernels_keep_the_entries_of_the_compiled_ones(blur, rows_only):
    x, y, _, _ = _pair("cube", 3000, seed=1)
    x, y = _sorted(x), _sorted(y)
    eps = blur**2
    # potentials that vary across the cloud, as after a few updates
    f, g = 0.3 * eps * torch.sin(9 * x).sum(1), 0.3 * eps * torch.cos(7 * y).sum(1)
    log_w = torch.full((3000,), -math.log(3000.0))
    native_pair = truncated_pair(x, y, log_w, log_w, None, f, g, eps, 10.0, rows_only)
    torch_pair = truncated_pair(
        x, y, log_w, log_w, None, f, g, eps, 10.0, rows_only, implementation="torch"
    )
    assert isinstance(torch_pair[0], DeviceSparseKernel)
    h = (log_w + g / eps, log_w + f / eps)
    for k_native, k_torch, h_cols, values in zip(native_pair, torch_pair, h, (y, x)):
        assert torch.equal(k_native.crow, k_torch.crow) and torch.equal(k_native.col, k_torch.col)
        torch.testing.assert_close(k_torch.cost, k_native.cost)
        torch.testing.assert_close(k_torch.lse(h_cols), k_native.lse(h_cols))
        torch.testing.assert_close(
            k_torch.average(h_cols, values),
            k_native.average(h_cols, values),
            atol=1e-5,
            rtol=1e-5,
            equal_nan=True,  # rows without entries (rows_only: the columns' side)
        )
    # the drift test and the re-absorption of far moved potentials, as the compiled ones
    moved = h[0] + 3 * torch.sin(5 * y[:, 0])
    assert torch_pair[0].drifted(moved, 1.0) == native_pair[0].drifted(moved, 1.0)
    far = h[0] + 80 * y[:, 0]  # a spread > 60: re-absorbed
    torch.testing.assert_close(torch_pair[0].lse(far), native_pair[0].lse(far))


@pytest.mark.parametrize("block_pairs", [None, 64])
def test_the_torch_kernels_find_every_entry_however_wrong_the_guess(monkeypatch, block_pairs):
    # a guess of the rows' lse far above the truth: its floor is caught, the rows done again;
    # block_pairs 64: the blocks of the largest clouds (128 points), candidates computed twice
    if block_pairs is not None:
        monkeypatch.setattr(device_kernels, "_BLOCK_PAIRS", block_pairs)
        monkeypatch.setattr(device_kernels, "_STORED_CHUNKS", 0)
    x, y, _, _ = _pair("tree", 2000, seed=2)
    x, y = _sorted(x), _sorted(y)
    h = torch.full((2000,), -math.log(2000.0))
    inv_eps = 1 / 0.02**2
    exact_rows, exact_cols, row_max = device_kernels.truncate(x, y, h, inv_eps, 10.0)
    for guess in (torch.full((2000,), 50.0), torch.full((2000,), math.nan), None):
        rows, cols, _ = device_kernels.truncate(x, y, h, inv_eps, 10.0, guess)
        assert torch.equal(
            torch.sort(rows * 2000 + cols).values, torch.sort(exact_rows * 2000 + exact_cols).values
        )
    # against brute force: every entry within the truncation of its row's max, and only those
    z = h[None] - torch.cdist(x.double(), y.double()).float() ** 2 / 2 * inv_eps
    kept = z >= z.amax(1, keepdim=True) - 10.0
    assert len(exact_rows) == int(kept.sum())
    assert bool(kept[exact_rows, exact_cols].all())
    torch.testing.assert_close(row_max, z.amax(1), atol=1e-3, rtol=1e-5)


def test_select_and_row_spread_match_their_definitions():
    x, y, _, _ = _pair("cube", 500, seed=3)
    h = torch.zeros(500)
    (crow, col, cost, _, _), _ = device_kernels.kernel_pair(
        x, y, h, h, h, h, 1 / 0.05**2, 10.0, False
    )
    rows = device_kernels.row_ids(crow)
    v = torch.randn(500)
    spread = max(
        float(v[col[rows == i].long()].max() - v[col[rows == i].long()].min())
        for i in range(500)
        if bool((rows == i).any())
    )
    assert device_kernels.row_spread(crow, col, v) == pytest.approx(spread)
    new_h = torch.randn(500)
    _, _, _, vals, new_max = device_kernels.select(crow, col, cost, new_h, 1 / 0.05**2, math.inf)
    z = new_h[col.long()] - cost / 0.05**2
    expected_max = torch.stack([z[rows == i].max() for i in range(500)])
    torch.testing.assert_close(new_max, expected_max)
    torch.testing.assert_close(vals, (z - new_max[rows]).exp())
    _, sel_col, _, _, _ = device_kernels.select(crow, col, cost, new_h, 1 / 0.05**2, 2.0)
    assert len(sel_col) == int((z >= new_max[rows] - 2.0).sum())


# ------------------------------------------------------------------------------ the solver
_CASES = {
    "cube 2k, blur 2 %": ("cube", 2000, 0.02, None, False),
    "cube 2k weighted, blur 5 %": ("cube", 2000, 0.05, None, True),
    "tree 2k, blur 1 %, unbalanced": ("tree", 2000, 0.01, 0.1, False),
    "tree 6k weighted, blur 1 %": ("tree", 6000, 0.01, None, True),
    "tree 20k weighted, blur 1 %": ("tree", 20_000, 0.01, None, True),
}
_SLOW = {"tree 20k weighted, blur 1 %"}  # about a minute on the CPU: the torch kernels there


def _cases():
    return [pytest.param(c, marks=pytest.mark.slow) if c in _SLOW else c for c in _CASES]


@needs_native
@pytest.mark.parametrize("case", _cases())
def test_the_forced_torch_path_solves_as_the_compiled_kernels(case):
    kind, n, blur, reach, weighted = _CASES[case]
    x, y, a, b = _pair(kind, n, seed=4, weighted=weighted)
    kw = {"blur": blur, "reach": reach, "tol": 1e-3, "max_iter": 500, "dense_pairs": 10_000}
    compiled = sinkhorn(x, y, a, b, kernels="native", **kw)
    forced = sinkhorn(x, y, a, b, kernels="torch", **kw)
    assert compiled.backend == forced.backend == "multiscale"
    assert forced.marginal_error < 1e-3
    eps = blur**2
    # float32 potentials of up to ~1000 eps: a few units of their last digit
    assert float((forced.f - compiled.f).abs().max()) < 1e-2 * eps
    assert float((forced.g - compiled.g).abs().max()) < 1e-2 * eps
    # converged to tol = 1e-3 after a different number of updates: a few points differ more
    moved = (forced.targets - compiled.targets).norm(dim=1)
    assert float(moved.mean()) < 2e-3 * blur and float(moved.max()) < 0.1 * blur
    assert float((forced.confidence - compiled.confidence).abs().max()) < 5e-3  # tol 1e-3
    assert forced.cost == pytest.approx(compiled.cost, rel=1e-4)
    assert forced.transported_mass == pytest.approx(compiled.transported_mass, abs=1e-4)
    if reach is None:  # the plan's own truncated support certifies the same interval
        for bound, reference in zip(forced.bounds(), compiled.bounds()):
            assert bound == pytest.approx(reference, rel=1e-3)


@needs_native
def test_the_forced_torch_path_warm_starts_as_the_compiled_kernels():
    x, y, _, _ = _pair("cube", 3000, seed=5)
    kw = {"blur": 0.02, "tol": 1e-4, "max_iter": 1000, "dense_pairs": 10_000}
    first = sinkhorn(x, y, **kw)
    moved = x + 0.002
    compiled = sinkhorn(moved, y, init=(first.f, first.g), kernels="native", **kw)
    forced = sinkhorn(moved, y, init=(first.f, first.g), kernels="torch", **kw)
    assert compiled.iterations == forced.iterations
    assert float((forced.targets - compiled.targets).abs().max()) < 1e-4


def test_the_kernels_option_chooses_the_implementation():
    cpu = torch.zeros(3, 3)
    on_cuda = SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32)
    assert truncation_backend("torch", cpu) == "torch"
    assert truncation_backend("auto", on_cuda) == "torch"  # type: ignore[arg-type]
    assert truncation_backend("native", on_cuda) is None  # type: ignore[arg-type]
    expected = "native" if native.available() else None
    assert truncation_backend("auto", cpu) == expected
    assert SolverOptions.from_config(SolverConfig(kernels="torch")).kernels == "torch"
    with pytest.raises(SolverError, match="kernels must be"):
        SolverOptions(kernels="cuda")


# ------------------------------------------------------------------------- a registration
def _sample_tre(kernels: str, device: str = "cpu") -> tuple[float, float]:
    """Mean TRE and mean residual (mm) of a quick registration of the sample pair."""
    source, target = otreg.load(helpers.SOURCE), otreg.load(helpers.TARGET)
    config = otreg.load_config(
        "lung_vessels",
        [
            "input.points=1500",
            "rigid.points=500",
            "rigid.iterations=10",
            "rigid.principal_axes=false",
            "solver.max_iter=100",
            "output.grid_spacing=16",
            f"solver.kernels={kernels}",
            f"device={device}",
        ],
    )
    result = otreg.register(source, target, config)
    moved = result.transform(read_landmarks(helpers.SOURCE_LANDMARKS))
    tre = target_registration_error(moved, read_landmarks(helpers.TARGET_LANDMARKS))
    return float(tre.mean()), result.metrics["residual_after"]["mean_mm"]


@pytest.mark.slow
@needs_native
def test_a_registration_on_the_forced_torch_path_matches_the_compiled_one():
    compiled, forced = _sample_tre("native"), _sample_tre("torch")
    assert forced[0] == pytest.approx(compiled[0], abs=0.02)
    assert forced[1] == pytest.approx(compiled[1], abs=0.02)


# ------------------------------------------------------------------------------- on a GPU
@cuda
@needs_native
@pytest.mark.parametrize("case", list(_CASES))
def test_cuda_solves_as_the_compiled_cpu_kernels(case):
    kind, n, blur, reach, weighted = _CASES[case]
    x, y, a, b = _pair(kind, n, seed=4, weighted=weighted)
    kw = {"blur": blur, "reach": reach, "tol": 1e-3, "max_iter": 500, "dense_pairs": 10_000}
    compiled = sinkhorn(x, y, a, b, kernels="native", **kw)
    on_gpu = [t if t is None else t.cuda() for t in (x, y, a, b)]
    gpu = sinkhorn(*on_gpu, **kw)
    assert gpu.backend == "multiscale" and gpu.f.is_cuda
    assert gpu.marginal_error < 1e-3
    # both solves stop at a marginal error of 1e-3, the GPU's float32 sums in another order:
    # the 6k tree's targets differed by 0.036 blur on an H200 (3 other cases: < 0.005 blur)
    assert float((gpu.targets.cpu() - compiled.targets).abs().max()) < 0.1 * blur
    assert gpu.cost == pytest.approx(compiled.cost, rel=1e-3)


@cuda
@needs_native
def test_cuda_registration_matches_the_cpu_one():
    pytest.importorskip("pyvista", reason="the sample pair is .vtk: reading it needs pyvista")
    compiled, gpu = _sample_tre("native"), _sample_tre("auto", device="cuda")
    assert gpu[0] == pytest.approx(compiled[0], abs=0.05)
    assert gpu[1] == pytest.approx(compiled[1], abs=0.05)


@cuda
def test_cuda_uses_the_torch_kernels_by_default():
    x = torch.rand(4000, 3, device="cuda")
    s = sinkhorn(x, x + 0.01, blur=0.02, dense_pairs=10_000)
    assert s.backend == "multiscale" and s.plan.truncated is not None and s.f.is_cuda
