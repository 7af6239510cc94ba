"""The transform contract (otreg.transforms.base): every field kind and the composite
Transform map points, give Jacobians, save and load through one registry of kinds; files
written before the contract still load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from otreg.errors import InputError
from otreg.transforms import (
    FIELD_KINDS,
    DisplacementField,
    KernelField,
    RidgeField,
    SpatialTransform,
    SVFField,
    Transform,
)
from otreg.transforms.base import field_from_arrays

LEGACY = Path(__file__).parent / "data" / "transform_v1.npz"
# written by otreg before the contract (rigid, then a kernel field stored without a kind, a
# ridge field with a confidence channel, an SVF field), and what it mapped these points to
LEGACY_POINTS = np.array(
    [
        [19.145698, 19.558588, 23.039558],
        [39.242735, 15.396216, 2.287834],
        [7.382327, 0.299876, 8.068775],
        [24.10116, 10.292441, 33.446309],
        [38.062947, 4.892409, 32.240143],
        [26.462947, 39.71711, 7.55781],
        [30.612782, 13.278319, 7.958381],
        [10.381588, 37.528313, 19.155346],
    ]
)
LEGACY_MOVED = np.array(
    [
        [21.37857129397649, 19.718923879258323, 22.66944157028431],
        [40.42486768394823, 16.991585621969975, 0.15286177798529926],
        [10.279519478723092, -0.064963494859821, 7.278856946179026],
        [25.61932967590771, 10.808302620256724, 33.65182909887983],
        [40.781586320456356, 6.194971088327276, 32.18765847124609],
        [28.531277833819075, 41.29673641198272, 7.840490926699554],
        [32.577844127859336, 14.24057351001334, 6.626696027380254],
        [12.361066972946455, 39.298094647545014, 18.850190916152517],
    ]
)
LEGACY_CONFIDENCE = np.array(
    [0.8610447343601961, 0.6787631855496532, 0.6917660332577202, 0.6319866547654253,
     0.6780559717773604, 0.8083766794279457, 0.6807938627842227, 0.8356874856092316]
)  # fmt: skip


def _fields() -> dict[str, DisplacementField]:
    rng = np.random.default_rng(3)
    c = rng.uniform(0, 40, (12, 3))
    kernel = KernelField(c, rng.normal(0, 2, (12, 4)), rng.uniform(0.5, 1, 12), 10.0)
    affine = np.vstack([rng.normal(0, 0.02, (3, 3)), [1.0, -2.0, 0.5]])
    ridge = RidgeField(c, rng.normal(0, 1, (12, 3)), affine, [8.0, 16.0], extra=kernel)
    svf = SVFField(rng.normal(0, 0.8, (4, 5, 4, 3)), [-5.0, -5.0, -5.0], 15.0)
    return {"kernel": kernel, "ridge": ridge, "svf": svf}


def test_a_transform_written_before_the_contract_still_loads():
    transform = Transform.load(LEGACY)
    assert [f.kind for f in transform.fields] == ["kernel", "ridge", "svf"]
    moved, confidence = transform.apply(LEGACY_POINTS)
    np.testing.assert_allclose(moved, LEGACY_MOVED, rtol=0, atol=1e-5)
    np.testing.assert_allclose(confidence, LEGACY_CONFIDENCE, rtol=0, atol=1e-6)
    # and what it writes now reads back to the same map
    again = Transform.from_arrays(transform.to_arrays())
    np.testing.assert_array_equal(again.map_points(LEGACY_POINTS), transform(LEGACY_POINTS))


def test_every_field_kind_is_registered_and_meets_the_contract(tmp_path):
    fields = _fields()
    assert set(FIELD_KINDS) == set(fields)
    points = np.random.default_rng(4).uniform(0, 40, (30, 3))
    for kind, field in fields.items():
        assert isinstance(field, SpatialTransform) and field.kind == kind
        assert FIELD_KINDS[kind] is type(field)
        mapped = field.map_points(points)
        assert mapped.shape == (30, 3)
        np.testing.assert_allclose(field.displacement(points), mapped - points, atol=1e-12)
        assert field.jacobian(points).shape == (30, 3, 3)
        back = field_from_arrays(field.to_arrays("f_"), "f_")
        assert type(back) is type(field)
        np.testing.assert_array_equal(back(points), field(points))
    transform = Transform(np.eye(4), list(fields.values()))
    saved = Transform.load(transform.save(tmp_path / "transform.npz"))
    np.testing.assert_array_equal(saved.map_points(points), transform.map_points(points))


def test_jacobians_have_known_answers():
    points = np.random.default_rng(5).uniform(0, 30, (20, 3))
    # a ridge field without kernel coefficients is affine: u = A^T [z, 1], D phi = I + A^T
    affine = np.vstack([[[0.1, 0.02, 0.0], [-0.03, 0.2, 0.01], [0.0, 0.05, -0.1]], [1, 2, 3]])
    ridge = RidgeField(points[:5], np.zeros((5, 3)), affine, [10.0])
    np.testing.assert_allclose(
        ridge.jacobian(points), np.broadcast_to(np.eye(3) + affine[:3].T, (20, 3, 3)), atol=1e-4
    )
    # a constant velocity flows into a translation (scaling and squaring in float32)
    svf = SVFField(np.full((3, 3, 3, 3), 2.0), [0.0, 0.0, 0.0], 15.0)
    np.testing.assert_allclose(
        svf.jacobian(points), np.broadcast_to(np.eye(3), (20, 3, 3)), atol=1e-6
    )
    # the rigid part of the composite: its matrix
    rotation = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    rigid = np.eye(4)
    rigid[:3, :3] = 1.5 * rotation
    np.testing.assert_allclose(
        Transform(rigid).jacobian(points), np.broadcast_to(1.5 * rotation, (20, 3, 3)), atol=1e-9
    )
    # a kernel field along x alone: d phi_x / dx = 1 - 100 / sigma^2 sech^2(5 x / sigma^2)
    controls = np.array([[-5.0, 0, 0], [5.0, 0, 0]])
    crossing = KernelField(controls, [[20.0, 0, 0], [-20.0, 0, 0]], np.ones(2), 3.0)
    x = np.column_stack([np.linspace(-6, 6, 13), np.full(13, 2.0), np.full(13, -1.0)])
    expected = np.zeros((13, 3, 3))
    expected[:] = np.eye(3)
    expected[:, 0, 0] = 1 - 100 / 9 / np.cosh(5 * x[:, 0] / 9) ** 2
    np.testing.assert_allclose(crossing.jacobian(x), expected, rtol=1e-3, atol=2e-3)


def test_an_unknown_field_kind_names_the_file(tmp_path):
    arrays = Transform(np.eye(4), [_fields()["svf"]]).to_arrays()
    arrays["field0_kind"] = np.array("bspline")
    path = tmp_path / "transform.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match="unknown field kind 'bspline'") as err:
        Transform.load(path)
    assert "transform.npz" in str(err.value)


def test_a_field_kind_is_taken_once():
    with pytest.raises(TypeError, match="taken"):

        class Another(KernelField):
            kind = "svf"
