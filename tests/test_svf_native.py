"""The SVF fields' compiled grid samplers (otreg.native.kernels.trilinear and squaring_step):
the same values as the torch path (grid_sample, align_corners=True, padding_mode="border")
that runs without the extension, and taken whenever the extension is usable."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from otreg import native
from otreg.native import kernels as native_kernels
from otreg.transforms import svf
from otreg.transforms.svf import SVFField, exp_velocity, sample_grid

needs_native = pytest.mark.skipif(
    not native.available(), reason="otreg's compiled kernels are not built (pip install -e .)"
)

SPACING = 3.0  # mm


def torch_trilinear(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The torch path: grid_sample of ``values`` at ``index``, in values' dtype."""
    dtype = torch.float32 if values.dtype == np.float32 else torch.float64
    return svf._sample(torch.as_tensor(values), torch.as_tensor(index, dtype=dtype)).numpy()


def random_indices(rng: np.random.Generator, shape, n: int) -> np.ndarray:
    """(n + 10, 3) fractional node indices: inside the grid, up to 3 grid sizes beyond it on
    every side, far outside (1e6 nodes), and exactly on the first and the last node."""
    size = np.array(shape, dtype=np.float64)
    index = rng.uniform(-3 * size, 4 * size - 3, size=(n, 3))
    index[: n // 2] = rng.uniform(0, size - 1, size=(n // 2, 3))  # half inside
    exact = np.array(
        [
            size - 1,  # the last node
            np.zeros(3),
            [size[0] - 1, 0, size[2] - 1],
            [1e6, -1e6, 0.5],
            [-1e6, 1e6, size[2] - 1],
            size - 1 + 1e-12,
            np.full(3, -1e-12),
            np.floor(size / 2),  # an interior node
            [size[0] - 1, 0.25, 0.75],
            size - 1.5,
        ]
    )
    return np.concatenate([index, exact])


@needs_native
@pytest.mark.parametrize("shape", [(7, 5, 9), (2, 2, 2), (1, 6, 4), (12, 3, 1)])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_trilinear_equals_grid_sample_in_float64(shape, channels):
    rng = np.random.default_rng(hash((shape, channels)) % 2**32)
    values = rng.normal(scale=10.0, size=(*shape, channels))
    index = random_indices(rng, shape, 4000)
    got = native_kernels.trilinear(values, index)
    assert got.dtype == np.float64 and got.shape == (len(index), channels)
    expected = torch_trilinear(values, index)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(values).max())
    # the last node and the far corners take exactly the border nodes' values
    np.testing.assert_allclose(got[-10], values[-1, -1, -1], rtol=1e-12)
    np.testing.assert_allclose(got[-9], values[0, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(got[-8], values[-1, 0, -1], rtol=1e-12)


@needs_native
@pytest.mark.parametrize("shape", [(7, 5, 9), (16, 2, 11)])
def test_trilinear_equals_grid_sample_in_float32(shape):
    rng = np.random.default_rng(sum(shape))
    values = rng.normal(scale=10.0, size=(*shape, 3)).astype(np.float32)
    index = random_indices(rng, shape, 4000)
    got = native_kernels.trilinear(values, index)
    assert got.dtype == np.float32
    expected = torch_trilinear(values, index)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(values).max())


@needs_native
def test_trilinear_is_the_same_on_any_number_of_threads():
    rng = np.random.default_rng(7)
    values = rng.normal(size=(20, 30, 25, 3))
    index = random_indices(rng, values.shape[:3], 100_000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native_kernels.trilinear(values, index)
        torch.set_num_threads(3)
        three = native_kernels.trilinear(values, index)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one, three)


@needs_native
def test_trilinear_nan_index_takes_the_last_node_as_grid_sample_does():
    values = np.random.default_rng(8).normal(size=(4, 5, 6, 2))
    index = np.array([[np.nan, 2.0, 3.0], [1.0, np.nan, np.nan]])
    np.testing.assert_array_equal(
        native_kernels.trilinear(values, index), torch_trilinear(values, index)
    )


@needs_native
def test_compiled_samplers_refuse_wrong_shapes():
    values = np.zeros((4, 5, 6, 2))
    with pytest.raises(ValueError, match="index has the wrong shape"):
        native_kernels.trilinear(values, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="values has the wrong shape"):
        native_kernels.trilinear(np.zeros((4, 5, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="u has the wrong shape"):
        native_kernels.squaring_step(values.astype(np.float32), SPACING)
    with pytest.raises(ValueError, match="spacing"):
        native_kernels.squaring_step(np.zeros((4, 5, 6, 3), np.float32), 0.0)
    with pytest.raises(TypeError):  # index must be float64: no silent conversion
        native_kernels.trilinear(values, np.zeros((3, 3), np.float32))


def smooth_velocity(shape=(30, 26, 34), amplitude=8.0) -> np.ndarray:
    """(X, Y, Z, 3) a breathing-like velocity: a Gaussian of 8 nodes' width, up to
    ``amplitude`` mm, on a grid of SPACING mm."""
    nodes = np.stack(
        np.meshgrid(*(np.arange(s, dtype=np.float64) for s in shape), indexing="ij"), -1
    )
    centre = (np.array(shape) - 1) * np.array([0.5, 0.4, 0.6])
    bump = np.exp(-((nodes - centre) ** 2).sum(-1) / (2 * 8.0**2))
    return (
        amplitude * bump[..., None] * np.array([0.3, -0.5, 1.0]) / np.linalg.norm([0.3, -0.5, 1.0])
    )


@needs_native
def test_squaring_step_is_u_composed_with_itself():
    u = (smooth_velocity() / 4).astype(np.float32)
    nodes = torch.stack(
        torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in u.shape[:3]), indexing="ij"),
        -1,
    )
    expected = (
        torch.from_numpy(u)
        + svf._sample(torch.from_numpy(u), nodes + torch.from_numpy(u) / SPACING)
    ).numpy()
    got = native_kernels.squaring_step(u, SPACING)
    assert got.dtype == np.float32 and got.shape == u.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(u).max())


@contextlib.contextmanager
def torch_path(monkeypatch):
    """``with torch_path(monkeypatch):`` the samplers run as with OTREG_NATIVE=0."""
    with monkeypatch.context() as patch:
        patch.setenv(native.DISABLE_ENV, "0")
        native._loaded.cache_clear()
        try:
            yield
        finally:
            native._loaded.cache_clear()
    native._loaded.cache_clear()


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of the compiled samplers; the torch sampler fails if the compiled path
    is usable (so a test passes only if every interpolation took the compiled path)."""
    counted = {"trilinear": 0, "squaring_step": 0, "torch": 0}
    for name in ("trilinear", "squaring_step"):
        original = getattr(native_kernels, name)

        def spy(*args, _name=name, _original=original):
            counted[_name] += 1
            return _original(*args)

        monkeypatch.setattr(native_kernels, name, spy)
    torch_sample = svf._sample

    def counted_torch(*args):
        counted["torch"] += 1
        assert not native.available(), "the torch sampler ran where the compiled one is usable"
        return torch_sample(*args)

    monkeypatch.setattr(svf, "_sample", counted_torch)
    return counted


@needs_native
def test_exp_velocity_matches_the_torch_path(calls, monkeypatch):
    v = smooth_velocity()
    compiled = exp_velocity(v, SPACING)
    n = svf.squarings_for(v, SPACING)
    assert calls == {"trilinear": 0, "squaring_step": n, "torch": 0}
    assert compiled.dtype == np.float64 and np.abs(compiled).max() > 5.0  # several mm
    with torch_path(monkeypatch):
        reference = exp_velocity(v, SPACING)
    assert calls["squaring_step"] == n and calls["torch"] == n  # the torch path, this time
    assert np.abs(compiled - reference).max() < 1e-4  # mm


@needs_native
def test_svf_fields_sample_through_the_compiled_kernels(calls, monkeypatch):
    v = smooth_velocity((20, 18, 22), amplitude=6.0)
    field = SVFField(
        v, origin=[-30.0, -20.0, -30.0], spacing=SPACING, extra=np.full((20, 18, 22, 1), 0.5)
    )
    points = np.random.default_rng(9).uniform(-40, 40, size=(5000, 3))  # some beyond the grid
    values = field(points)
    inverse = field.inverse(points)
    on_grid = sample_grid(field.node_displacement, (points - field.origin) / SPACING)
    assert calls["trilinear"] == 3 and calls["squaring_step"] > 0 and calls["torch"] == 0
    with torch_path(monkeypatch):
        fresh = SVFField(field.velocity, field.origin, SPACING, field.extra)
        np.testing.assert_allclose(values, fresh(points), rtol=0, atol=1e-4)
        np.testing.assert_allclose(inverse, fresh.inverse(points), rtol=0, atol=1e-4)
        np.testing.assert_allclose(
            on_grid, sample_grid(fresh.node_displacement, (points - fresh.origin) / SPACING),
            rtol=0, atol=1e-4,
        )  # fmt: skip
    assert calls["torch"] > 0
    np.testing.assert_allclose(values[:, 3], 0.5, rtol=1e-12)


def test_samplers_run_without_the_extension(calls, monkeypatch):
    """OTREG_NATIVE=0 (or no extension): the torch path, and the same known values."""
    values = np.random.default_rng(10).normal(size=(4, 5, 6, 2))
    index = np.array([[1, 2, 3], [1.5, 2, 3], [-5, 2, 3], [9, 2, 3]])
    with torch_path(monkeypatch):
        got = sample_grid(values, index)
        u = exp_velocity(smooth_velocity((12, 12, 12), 2.0), SPACING)
    np.testing.assert_allclose(got[1], (values[1, 2, 3] + values[2, 2, 3]) / 2)
    np.testing.assert_allclose(got[3], values[3, 2, 3])
    assert np.isfinite(u).all() and np.abs(u).max() > 1.0
    assert calls["trilinear"] == calls["squaring_step"] == 0 and calls["torch"] > 1
