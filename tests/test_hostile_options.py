"""Every config key at and beyond its bounds: a ConfigError naming the key, or a valid config;
never another exception. Property-based over the whole schema (hypothesis)."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from otreg.config import Config, load_config
from otreg.errors import ConfigError

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")


def _keys(model: type[BaseModel] = Config, where: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _keys(annotation, f"{where}{name}.")
        else:
            keys.append(f"{where}{name}")
    return keys


KEYS = _keys()
EDGE_VALUES = [
    "0", "-1", "1", "-0.0", "1e-300", "1e300", "inf", "-inf", "nan", str(2**70), str(-(2**70)),
    "true", "'text'", "[]", "[1e-9, nan]", "{}", "none", "''", "[[1]]", "1_000", "0x10",
]  # fmt: skip


def test_the_schema_has_its_keys():
    assert {"match.blur", "smooth.sigma", "output.grid_spacing", "seed", "memory_limit_gb"} <= set(
        KEYS
    )


@pytest.mark.parametrize("key", KEYS)
def test_each_key_at_its_edges(key):
    for value in EDGE_VALUES:
        try:
            load_config(None, [f"{key}={value}"])
        except ConfigError as err:
            assert key.split(".")[-1] in str(err), (key, value, str(err))


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    key=st.sampled_from(KEYS),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(min_value=-(2**80), max_value=2**80).map(str),
        st.text(max_size=12).map(repr),
        st.lists(st.floats(allow_nan=True), max_size=3).map(
            lambda v: "[" + ", ".join(map(repr, v)) + "]"
        ),
    ),
)
def test_random_values_give_a_config_or_a_config_error(key, value):
    try:
        config = load_config(None, [f"{key}={value}"])
    except ConfigError:
        return
    assert isinstance(config, Config)
    # what is accepted is finite wherever it is a number
    for number in _numbers(config.model_dump()):
        assert number == number and abs(number) != float("inf"), (key, value)


def _numbers(data: typing.Any):
    if isinstance(data, dict):
        for value in data.values():
            yield from _numbers(value)
    elif isinstance(data, (list, tuple)):
        for value in data:
            yield from _numbers(value)
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        yield data
