"""The config schema: presets, TOML files, --set overrides, round trips, rounds."""

from __future__ import annotations

import sys
import typing

import pytest
from pydantic import BaseModel

from otreg.config import PRESET_DIR, Config, load_config, preset_names
from otreg.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# ----------------------------------------------------------------------------- presets
def test_there_are_presets():
    assert {"lung_vessels", "lung_points", "lung_mask"} <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_preset_loads_and_validates(name):
    path = PRESET_DIR / f"{name}.toml"
    # the first line describes the preset ('otreg config presets' shows it)
    assert path.read_text().startswith("# ")
    raw = tomllib.loads(path.read_text())
    config = load_config(name)
    assert config == load_config(path) == load_config(str(path))
    # every value the file sets is in the config (no key silently dropped or renamed)
    dumped = config.model_dump()
    for section, values in raw.items():
        if isinstance(values, dict):
            for key, value in values.items():
                got = dumped[section][key]
                assert got == value or got == [value], (name, section, key, got, value)
        else:
            assert dumped[section] == values
    assert config.rounds  # at least one non-rigid round


@pytest.mark.parametrize("name", preset_names())
def test_presets_read_files_as_the_defaults_do(name):
    """otreg register reads the inputs before it picks a preset by their type."""
    from otreg.io import load_options

    assert load_options(load_config(name).input) == load_options(Config().input)


def test_defaults():
    assert load_config() == Config()
    assert Config().rounds == [(3.0, 10.0, 10.0, "gaussian"), (1.0, 5.0, 10.0, "gaussian")]


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError) as info:
        load_config("lung_vesels")
    message = str(info.value)
    assert "lung_vesels" in message
    for name in preset_names():
        assert name in message


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize(
    "text, key",
    [
        ("[match]\nblur = 2.0\nblurr = 3.0\n", "match.blurr"),
        ("[matching]\nblur = 2.0\n", "matching"),
        ("sed = 3\n", "sed"),
        ("[solver]\nmax_iters = 10\n", "solver.max_iters"),
    ],
)
def test_unknown_key_in_file_names_key_and_file(tmp_path, text, key):
    path = tmp_path / "my.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert f"unknown key {key!r}" in message


def test_bad_value_in_file_names_key_value_and_file(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text("[solver]\nscaling = 1.5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "solver.scaling" in message and "1.5" in message


def test_invalid_toml_names_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[match\nblur = 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "TOML" in str(info.value)


def test_several_errors_are_all_reported(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text("[match]\nblurr = 2.0\n[solver]\ntol = -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "match.blurr" in str(info.value) and "solver.tol" in str(info.value)


# ----------------------------------------------------------------------------- overrides
def test_overrides_floats_ints_bools_words():
    config = load_config(
        overrides=[
            "match.reach=12.5",
            "solver.tol=1e-4",
            "solver.max_iter=50",
            "rigid.enabled=false",
            "device=cpu",  # a bare word: a string
            "solver.backend = torch",  # spaces around '=' are fine
            "output.grid_spacing=3",  # an int for a float field
        ]
    )
    assert config.match.reach == [12.5]
    assert config.solver.tol == 1e-4
    assert config.solver.max_iter == 50
    assert config.rigid.enabled is False
    assert config.device == "cpu"
    assert config.solver.backend == "torch"
    assert config.output.grid_spacing == 3.0


def test_overrides_lists_and_tuples():
    config = load_config(
        overrides=[
            "match.blur=[4, 2.5, 1]",
            "smooth.sigma=[8, 6, 4]",
            "input.label=[1, 2]",
            "input.intensity_range=[-1000, -400]",
        ]
    )
    assert config.match.blur == [4.0, 2.5, 1.0]
    assert config.smooth.sigma == [8.0, 6.0, 4.0]
    assert config.input.label == [1, 2]
    assert config.input.intensity_range == (-1000.0, -400.0)
    assert [r[:3] for r in config.rounds] == [(4.0, 8.0, 10.0), (2.5, 6.0, 10.0), (1.0, 4.0, 10.0)]


def test_scalar_blur_and_sigma_become_lists():
    config = load_config(overrides=["match.blur=2", "smooth.sigma=7.5"])
    assert config.match.blur == [2.0] and config.smooth.sigma == [7.5]


@pytest.mark.parametrize("word", ["none", "None", "null", "NONE"])
def test_override_none_unsets(word):
    assert load_config("lung_mask").match.reach == [20.0]
    config = load_config("lung_mask", [f"match.reach={word}"])
    assert config.match.reach is None
    assert load_config(overrides=[f"input.weight_by={word}"]).input.weight_by is None


def test_precedence_defaults_file_set_keywords(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("seed = 3\n[input]\npoints = 1000\n[rigid]\nblur = 3.0\n")
    config = load_config(path)
    assert (config.seed, config.input.points, config.rigid.blur) == (3, 1000, 3.0)
    assert config.match.blur == Config().match.blur  # untouched keys keep their defaults
    config = load_config(path, ["input.points=500", "seed=4"])
    assert (config.seed, config.input.points, config.rigid.blur) == (4, 500, 3.0)
    # keyword values (the CLI's --points, --seed ...) come last; None means "not given"
    config = load_config(path, ["input.points=500"], input__points=200, seed=None)
    assert (config.seed, config.input.points) == (3, 200)
    # the last of repeated overrides wins
    assert load_config(overrides=["seed=1", "seed=2"]).seed == 2


@pytest.mark.parametrize(
    "override, words",
    [
        ("match.blur", ["match.blur", "section.key=value"]),
        ("match.blurr=2", ["unknown key 'match.blurr'", "--set"]),
        ("output.report_render_timeout=5", ["unknown key", "drawn in the run's own process"]),
        ("nosuchsection.key=1", ["unknown key 'nosuchsection'"]),
        ("seed.value=1", ["seed"]),
        ("solver.tol=abc", ["solver.tol", "abc"]),
        ("match.blur=[1, -2]", ["match.blur", "-2"]),
        ("device=gpu", ["device", "gpu"]),
        ("input.points=-1", ["input.points"]),
    ],
)
def test_bad_overrides(override, words):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    for word in words:
        assert word in str(info.value), str(info.value)


def test_bad_override_with_file_names_both(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config("lung_mask", ["match.blurr=2"])
    message = str(info.value)
    assert "lung_mask.toml" in message and "--set" in message and "match.blurr" in message


# ----------------------------------------------------------------------------- round trips
def _custom() -> Config:
    return load_config(
        "lung_vessels",
        [
            "device=cpu",
            "seed=7",
            "input.weight_by=radius",
            "input.label=[3, 4]",
            "input.intensity_range=[-950.5, -300]",
            "input.volume=1",
            "rigid.reach=30",
            "rigid.scale=true",
            "match.blur=[3, 1.5]",
            "match.reach=[12, 6]",
            "smooth.sigma=[9, 4.5]",
            'smooth.regression=["gaussian", "ridge"]',
            "smooth.anisotropic=true",
            "solver.dtype=float64",
            "output.dense_field=false",
        ],
    )


@pytest.mark.parametrize("which", ["defaults", *preset_names(), "custom"])
def test_to_toml_round_trips(which, tmp_path):
    config = {"defaults": Config, "custom": _custom}.get(which, lambda: load_config(which))()
    text = config.to_toml()
    assert Config.model_validate(tomllib.loads(text)) == config
    path = tmp_path / "config.resolved.toml"
    path.write_text(text)
    assert load_config(path) == config
    assert load_config(path).to_toml() == text


def _optional_keys(model: type[BaseModel] = Config, where: str = "") -> list[str]:
    """Dotted names of every key that may be none."""
    keys = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _optional_keys(annotation, f"{where}{name}.")
        elif type(None) in typing.get_args(annotation):
            keys.append(f"{where}{name}")
    return keys


def test_there_are_optional_keys():
    assert {"match.reach", "rigid.reach", "input.weight_by", "input.volume"} <= set(
        _optional_keys()
    )


@pytest.mark.parametrize("key", _optional_keys())
@pytest.mark.parametrize("base", [None, *preset_names()])
def test_to_toml_round_trips_none(key, base, tmp_path):
    """TOML has no null: a key set to none must still read back as none (whatever its default)."""
    config = load_config(base, [f"{key}=none"])
    path = tmp_path / "config.resolved.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config


def test_none_in_a_file_unsets(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[rigid]\nreach = "none"\n[match]\nreach = "None"\n')
    config = load_config(path)
    assert config.rigid.reach is None and config.match.reach is None
    # only optional keys take it: elsewhere "none" stays an (invalid) value
    path.write_text('[solver]\nbackend = "none"\n')
    with pytest.raises(ConfigError, match="solver.backend"):
        load_config(path)


def test_to_toml_of_unset_preset_value(tmp_path):
    config = load_config("lung_vessels", ["match.reach=none"])
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert load_config(path).match.reach is None


# ----------------------------------------------------------------------------- rounds
@pytest.mark.parametrize(
    "blur, sigma, rounds",
    [
        ("2", "5", [(2.0, 5.0)]),
        ("[4, 2, 1]", "5", [(4.0, 5.0), (2.0, 5.0), (1.0, 5.0)]),
        ("1", "[10, 6, 3]", [(1.0, 10.0), (1.0, 6.0), (1.0, 3.0)]),
        ("[4, 1]", "[8, 4]", [(4.0, 8.0), (1.0, 4.0)]),
        ("[2]", "[8, 4]", [(2.0, 8.0), (2.0, 4.0)]),
    ],
)
def test_rounds_broadcast(blur, sigma, rounds):
    config = load_config(overrides=[f"match.blur={blur}", f"smooth.sigma={sigma}"])
    assert [r[:3] for r in config.rounds] == [(b, s, 10.0) for b, s in rounds]


def test_rounds_of_different_lengths_are_an_error():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["match.blur=[4, 2, 1]", "smooth.sigma=[8, 4]"])
    message = str(info.value)
    assert "match.blur" in message and "smooth.sigma" in message
    assert "3" in message and "2" in message


def test_rounds_check_applies_to_files(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[match]\nblur = [3.0, 2.0]\n[smooth]\nsigma = [8.0, 6.0, 4.0]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_reach_per_round_and_balanced():
    config = load_config(
        overrides=["match.blur=[4, 2, 1]", "smooth.sigma=8", "match.reach=[20, 10, 3]"]
    )
    assert [r[:3] for r in config.rounds] == [(4.0, 8.0, 20.0), (2.0, 8.0, 10.0), (1.0, 8.0, 3.0)]
    assert all(r.reach is None for r in load_config(overrides=["match.reach=none"]).rounds)
    with pytest.raises(ConfigError, match="match.reach has 2"):
        load_config(overrides=["match.blur=[4, 2, 1]", "match.reach=[20, 10]"])


def test_regression_per_round():
    config = load_config(
        overrides=[
            "match.blur=[4, 2, 1]",
            "smooth.sigma=8",
            'smooth.regression=["gaussian", "gaussian", "ridge"]',
        ]
    )
    assert [r.regression for r in config.rounds] == ["gaussian", "gaussian", "ridge"]
    assert {r.regression for r in load_config(overrides=["smooth.regression=ridge"]).rounds} == {
        "ridge"
    }
    with pytest.raises(ConfigError, match="smooth.regression has 3"):
        load_config(overrides=['smooth.regression=["gaussian", "ridge", "ridge"]'])
    with pytest.raises(ConfigError, match="smooth.regression"):
        load_config(overrides=["smooth.regression=spline"])


def test_ridge_points_need_four_controls():
    assert load_config(overrides=["smooth.ridge_points=0"]).smooth.ridge_points == 0
    with pytest.raises(ConfigError, match="smooth.ridge_points: .*at least 4"):
        load_config(overrides=["smooth.ridge_points=3"])


def test_feature_weights():
    config = load_config(overrides=["match.feature_weights.radius=2"])
    assert config.match.feature_weights == {"radius": 2.0}
    assert load_config().match.feature_weights == {}
    with pytest.raises(ConfigError, match="match.feature_weights.radius"):
        load_config(overrides=["match.feature_weights.radius=-1"])
