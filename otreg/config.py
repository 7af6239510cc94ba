"""The configuration schema: the one place where every default lives.

A config is built from (lowest to highest priority) the schema defaults, a TOML file (a path or
the name of a packaged preset, see :func:`preset_names`), and ``section.key=value`` overrides.
Lengths are millimetres throughout: ``blur`` is the standard deviation of the Gaussian kernel of
the entropic OT problem (cost |x - y|^2 / 2, epsilon = blur^2), ``reach`` the unbalanced-OT length
(rho = reach^2), ``sigma`` the width of the smoothing kernel.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "configs"

#: the fewest points a cloud may have (a rigid fit needs 4 points in general position)
MIN_POINTS = 4


def check_point_count(n: int) -> int:
    """The rule for a number of points to keep: 0 (keep all) or at least :data:`MIN_POINTS`.

    Raises:
        ValueError: otherwise (the schema reports it as a ConfigError naming the key).
    """
    if n < 0 or 0 < n < MIN_POINTS:
        raise ValueError(f"must be 0 (keep all) or at least {MIN_POINTS}")
    return n


class _Section(BaseModel):
    # every number of the schema is finite: inf and nan are refused where they are read
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _none_strings(cls, data: Any) -> Any:
        """TOML has no null: "none" (any case) unsets an optional key in a file, as in --set."""
        if not isinstance(data, dict):
            return data
        return {
            k: None if _is_none_word(v) and _allows_none(cls, k) else v for k, v in data.items()
        }


class InputConfig(_Section):
    """How files become weighted point clouds (both source and target)."""

    points: int = Field(
        20000,
        description="down-sample each cloud to at most this many points (0 = keep all; else at least 4)",
    )
    weight_by: str | None = Field(
        None, description="multiply weights by this point array (e.g. 'radius')"
    )
    surface_weights: Literal["area", "uniform"] = Field(
        "area", description="mesh vertices weighted by their share of triangle area, or 1 each"
    )
    label: list[int] = Field(
        default_factory=list,
        description="NIfTI: keep voxels with these values (default: all non-zero of a mask)",
    )
    intensity_range: tuple[float, float] | None = Field(
        None, description="NIfTI: keep voxels with low <= value <= high"
    )
    volume: int | None = Field(None, ge=0, description="NIfTI: index of the volume of a 4D image")
    mesh_frame: Literal["lps", "ras"] = Field(
        "lps",
        description="frame of mesh files without a SPACE= tag: lps (what 3D Slicer >= 4.11 and "
        "ITK-based tools assume and write) or ras; tagged files are read in their own frame",
    )

    _point_count = field_validator("points")(check_point_count)


class SolverConfig(_Section):
    """Settings of the Sinkhorn solver shared by every OT solve."""

    backend: Literal["auto", "torch", "keops"] = Field(
        "auto",
        description="dense kernels; auto: torch blocks, keops on CUDA where every level is dense "
        "(multiscale off)",
    )
    scaling: float = Field(0.5, gt=0, lt=1, description="blur ratio between annealing steps")
    tol: PositiveFloat = Field(
        1e-3, description="stop at the final blur when the marginal error (L1, relative) is below"
    )
    max_iter: PositiveInt = Field(500, description="iterations at the final blur, at most")
    overrelaxation: float = Field(
        1.8, ge=1, lt=2, description="omega of the over-relaxed final iterations (1 = plain)"
    )
    dtype: Literal["float32", "float64"] = "float32"
    multiscale: bool = Field(
        True,
        description="solve large problems coarse to fine with truncated kernels (false: dense)",
    )
    truncation: PositiveFloat = Field(
        10.0,
        description="multiscale kernels keep entries within exp(-truncation) of their row's largest",
    )
    kernels: Literal["auto", "native", "torch"] = Field(
        "auto",
        description="who builds the multiscale truncated kernels: auto = compiled on the CPU, "
        "torch on CUDA; native = compiled only (else dense); torch = the GPU path on any device",
    )


class RigidConfig(_Section):
    """Step 1: rigid (or similarity) pre-alignment by OT matching + weighted Procrustes."""

    enabled: bool = True
    scale: bool = Field(False, description="also fit one isotropic scale (similarity)")
    points: int = Field(
        4000,
        ge=MIN_POINTS,
        description="points per cloud at the final blur (the coarser blurs use fewer)",
    )
    blur: PositiveFloat = Field(4.0, description="final blur of the rigid matching, mm")
    reach: PositiveFloat | None = Field(
        20.0, description="unbalanced OT for partial overlap, mm (none = balanced)"
    )
    solver_tol: PositiveFloat = Field(
        1e-2,
        description="Sinkhorn marginal tolerance in the rigid rounds (Procrustes averages the rest)",
    )
    iterations: PositiveInt = Field(
        30,
        description="matching/Procrustes rounds at the final blur, at most (they also stop when the updates stop shrinking)",
    )
    tol_deg: PositiveFloat = Field(0.01, description="stop when the rotation update is below, deg")
    tol_mm: PositiveFloat = Field(0.01, description="stop when the translation update is below, mm")
    principal_axes: bool = Field(
        True, description="try the orientations of the principal axes (large rotations)"
    )


class MatchConfig(_Section):
    """Step 2: optimal-transport matching of the (rigidly aligned) source onto the target.

    ``blur`` and ``reach`` may list one value per coarse-to-fine round; ``smooth.sigma`` then
    lists as many (a single value serves every round).
    """

    blur: list[PositiveFloat] = Field(default_factory=lambda: [3.0, 1.0], min_length=1)
    reach: list[PositiveFloat] | None = Field(
        default_factory=lambda: [10.0],
        min_length=1,
        description="unbalanced OT, mm, one or one per round: unmatched structures may be left out (none = balanced)",
    )
    feature_weights: dict[str, PositiveFloat] = Field(
        default_factory=dict,
        description="point arrays added to the matching cost, mm per unit of the array "
        "(e.g. {radius = 1.0}: 1 mm of radius difference costs as much as 1 mm of distance); "
        "both clouds need them",
    )
    extrapolation: float = Field(
        1.0,
        ge=1,
        le=2,
        description="move the points this many times the way to each round's new fit, except in the "
        "last round (over-relaxation of the rounds' fixed point; 1 = plain)",
    )
    tolerance: float = Field(
        0.0,
        ge=0,
        description="mm: skip a round that repeats the settings of the round before once that one "
        "moved the points by less than this on average (repeats iterate towards a fixed point); "
        "the last round always runs; 0 = run every round",
    )

    @field_validator("blur", "reach", mode="before")
    @classmethod
    def _scalar_to_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, (int, float, str)) else v


class SmoothConfig(_Section):
    """Step 3: regression of the matches into a displacement field defined everywhere.

    ``regression`` (one, or one per round): ``gaussian``, the Nadaraya-Watson average of the
    matches with a Gaussian of width ``sigma``; ``ridge``, kernel ridge regression (an affine
    part plus Gaussians of ``ridge_widths`` times sigma, smoothness weight ``regularization``:
    see :mod:`otreg.transforms.ridge`).

    ``model = "svf"`` makes the last round's regression a diffeomorphism: a stationary velocity
    field on a grid (``svf_spacing`` mm, default sigma / 2, reaching sigma beyond the points)
    whose exponential (scaling and squaring) has about that displacement, and whose inverse is
    exp(-v).
    """

    sigma: list[PositiveFloat] = Field(
        default_factory=lambda: [10.0, 5.0], min_length=1, description="kernel width per round, mm"
    )
    regression: list[Literal["gaussian", "ridge"]] = Field(
        default_factory=lambda: ["gaussian"],  # type: ignore[arg-type]
        min_length=1,
        description="per round: gaussian (kernel average of the matches) or ridge (kernel ridge "
        "regression: less biased where the sampling is uneven, e.g. at the lung's border)",
    )
    regularization: PositiveFloat | Literal["auto"] = Field(
        1.0,
        description="ridge: smoothness weight lambda, about (match error / non-affine "
        "motion)^2: larger is smoother; auto: chosen per round from the matches "
        "(generalized cross-validation of the fit, logged and in metrics.json's rounds; for "
        "matches that scatter independently, e.g. feature points, not vessels or surfaces)",
    )
    ridge_widths: list[PositiveFloat] = Field(
        default_factory=lambda: [1.0, 2.0, 4.0, 8.0],
        min_length=1,
        description="ridge: the kernel is the mean of Gaussians of these multiples of sigma",
    )
    trend: Literal["affine", "quadratic"] = Field(
        "affine",
        description="ridge: the part of the fit that the smoothness weight leaves free: affine, "
        "or quadratic (breathing's large-scale curvature, e.g. the base moving most, is then "
        "not flattened)",
    )
    ridge_points: int = Field(
        1500,
        description="ridge: fit the matches averaged over voxel cells, at most this "
        "many (the fit costs O(points^2) per CG iteration; 0 = every match)",
    )
    anisotropic: bool = Field(
        False,
        description="ridge: trust matches less along the local structure of the source "
        "(within a surface, along a vessel), where OT matching between independent samplings slides",
    )
    model: Literal["displacement", "svf"] = Field(
        "displacement",
        description="displacement: the last round's regression is the "
        "displacement; svf: a velocity whose exponential has that displacement (fold-free)",
    )
    svf_spacing: PositiveFloat | None = Field(
        None, description="svf: grid spacing of the velocity field, mm (none = sigma / 2 per round)"
    )

    _scalar_to_list = field_validator("sigma", "regression", mode="before")(
        MatchConfig._scalar_to_list.__func__  # type: ignore[attr-defined]
    )

    _point_count = field_validator("ridge_points")(check_point_count)

    @field_validator("regularization", mode="before")
    @classmethod
    def _auto_or_number(cls, v: Any) -> Any:
        """auto (any case) or a positive, finite number, with one message otherwise."""
        if isinstance(v, str) and v.strip().lower() == "auto":
            return "auto"
        try:
            number = float(v)
        except (TypeError, ValueError):
            raise ValueError('must be a positive number or "auto"') from None
        if not (0 < number < float("inf")):
            raise ValueError('must be a positive, finite number or "auto"')
        return number


class OutputConfig(_Section):
    """What is written besides the always-written files."""

    dense_field: bool = Field(True, description="write ITK/ANTs/Slicer displacement NIfTI fields")
    grid_spacing: PositiveFloat = Field(4.0, description="spacing of the dense fields, mm")
    grid_margin: float = Field(
        10.0,
        ge=0,
        description="the dense fields reach this far beyond the reference image (or, without "
        "one, beyond the box of both clouds), mm",
    )
    jacobian: bool = Field(
        True,
        description="Jacobian determinant of the transform on a grid_spacing grid over the source (metrics.json)",
    )
    report: bool = Field(
        True, description="write report.html (pictures, plots, numbers with flags, provenance)"
    )
    report_pictures: bool = Field(
        True,
        description="report.html: draw the clouds (coronal and axial projections); false: "
        "plots and numbers only",
    )
    report_points: int = Field(
        20000, description="report.html: at most this many points per cloud in the pictures"
    )

    _report_points = field_validator("report_points")(check_point_count)


class ChecksConfig(_Section):
    """Signs of a registration gone wrong, flagged in metrics.json, the log and the summary.

    Two scans of one patient's lungs leave about a quarter of the mass of sparse feature points
    unmatched, and less of vessel trees and masks; two different patients, a mirrored or
    half-missing scan leave most of it unmatched (benchmarks/README.md has the figures). These
    are the defaults; a preset sets its own where its input differs (lung_surface: rebuilt
    meshes leave much surface without partner on good registrations).
    """

    min_matched_mass: float = Field(
        0.4, ge=0, le=1, description="flag when less of the source's mass is matched"
    )
    min_region_matched_mass: float = Field(
        0.35,
        ge=0,
        le=1,
        description="flag when less is matched in one octant of the source (of 5 % of its mass or more)",
    )
    min_half_matched_mass: float = Field(
        0.35,
        ge=0,
        le=1,
        description="flag when less is matched in one half of the source (cut through its centre of mass across x, y or z)",
    )
    max_inverse_error_mm: PositiveFloat = Field(
        1.0,
        description="flag when the inverse misses by more, mm (p95; the dense fixed -> moving field: p99)",
    )


class Round(NamedTuple):
    """One coarse-to-fine non-rigid round: lengths in mm, the regression of its matches."""

    blur: float
    sigma: float
    reach: float | None
    regression: str


class Config(_Section):
    """The whole effective configuration of one registration."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed (down-sampling grid offsets)")
    memory_limit_gb: PositiveFloat | None = Field(
        None,
        description="refuse inputs and grids whose estimated memory exceeds this, GiB "
        "(none: half of this machine's memory)",
    )
    input: InputConfig = Field(default_factory=InputConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    rigid: RigidConfig = Field(default_factory=RigidConfig)
    match: MatchConfig = Field(default_factory=MatchConfig)
    smooth: SmoothConfig = Field(default_factory=SmoothConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    checks: ChecksConfig = Field(default_factory=ChecksConfig)

    @model_validator(mode="after")
    def _rounds_agree(self) -> Config:
        lengths = {
            "match.blur": len(self.match.blur),
            "smooth.sigma": len(self.smooth.sigma),
            "match.reach": len(self.match.reach or [None]),
            "smooth.regression": len(self.smooth.regression),
        }
        if len(set(lengths.values()) - {1}) > 1:
            given = ", ".join(f"{key} has {n}" for key, n in lengths.items())
            raise ValueError(
                f"the per-round lists disagree ({given}): give as many of each (or one)"
            )
        return self

    @property
    def rounds(self) -> list[Round]:
        """(blur, sigma, reach, regression) of each non-rigid round (reach None: balanced)."""
        lists: list[list[Any]] = [
            self.match.blur,
            self.smooth.sigma,
            self.match.reach or [None],
            self.smooth.regression,
        ]
        n = max(map(len, lists))
        return [Round(*values) for values in zip(*(v * n if len(v) == 1 else v for v in lists))]

    def to_toml(self) -> str:
        """The config as TOML text, which :func:`load_config` reads back to an equal config.

        TOML has no null: keys set to none are left out where none is their schema default,
        and written as ``"none"`` where it is not (e.g. a balanced ``rigid.reach``).
        """
        import tomli_w

        return tomli_w.dumps(_toml_values(self.model_dump(mode="json"), self))


# ----------------------------------------------------------------------------- loading
def preset_names() -> list[str]:
    """Names of the packaged presets (``otreg/configs/*.toml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A preset name ('lung_vessels') or a path to a TOML file -> an existing path."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{name_or_path}.toml"
    if preset.is_file():
        return preset
    raise ConfigError(
        f"{name_or_path}: no such config file, nor a preset (presets: {', '.join(preset_names())})"
    )


def load_config(
    config: str | Path | Config | None = None,
    overrides: Sequence[str] | None = None,
    **values: Any,
) -> Config:
    """Build the effective :class:`Config`.

    Args:
        config: a TOML path, a preset name or a :class:`Config` to start from; ``None`` for
            the schema defaults.
        overrides: ``"section.key=value"`` strings, value in TOML syntax (``none`` unsets).
        values: settings applied last, as keyword arguments with ``__`` for the dot
            (``device="cpu"``, ``input__points=5000``); ``None`` values are ignored (the CLI
            passes its unset options this way).
    """
    data: dict[str, Any] = {}
    where = "defaults"
    if isinstance(config, Config):
        data, where = config.model_dump(), "settings"
    elif config is not None:
        path = resolve_config_path(config)
        where = str(path)
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
    for item in overrides or []:
        key, value = _parse_override(item)
        _set_dotted(data, key, value)
    given = {key: value for key, value in values.items() if value is not None}
    for key, value in given.items():
        _set_dotted(data, key.replace("__", "."), value)
    # name where a bad key or value may come from, not just "defaults"
    extras = [name for name, used in (("--set", overrides), ("options", given)) if used]
    if extras:
        where = ", ".join(extras) if config is None else f"{where} (with {', '.join(extras)})"
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, where)) from None


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, text = (part.strip() for part in item.split("=", 1))
    if text.lower() in ("none", "null"):
        return key, None
    try:
        return key, tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return key, text  # a bare word such as cpu or keops


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *sections, leaf = key.split(".")
    node = data
    for section in sections:
        child = node.setdefault(section, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {section!r} is a value, not a section")
        node = child
    node[leaf] = value


#: keys that were settings once: what became of them
REMOVED_KEYS = {
    "output.report_render_timeout": "the pictures are drawn in the run's own process now, with "
    "no time limit to set: remove the key",
}


def _describe(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            hint = f" ({REMOVED_KEYS[key]})" if key in REMOVED_KEYS else ""
            lines.append(f"unknown key {key!r}{hint}")
        else:
            message = e["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {message} (got {e.get('input')!r})")
    return f"{where}: invalid config: " + "; ".join(lines)


def _is_none_word(value: Any) -> bool:
    return isinstance(value, str) and value.lower() in ("none", "null")


def _allows_none(model: type[BaseModel], key: str) -> bool:
    info = model.model_fields.get(key)
    return info is not None and type(None) in get_args(info.annotation)


def _toml_values(data: dict[str, Any], model: BaseModel) -> dict[str, Any]:
    """``model.model_dump(mode="json")`` without None values (see :meth:`Config.to_toml`)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        attribute = getattr(model, key)
        if isinstance(attribute, BaseModel):
            out[key] = _toml_values(value, attribute)
        elif value is not None:
            out[key] = value
        elif type(model).model_fields[key].get_default(call_default_factory=True) is not None:
            out[key] = "none"
    return out
