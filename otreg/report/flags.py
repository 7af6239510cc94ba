"""The report's flags: the few numbers of a registration that call for a closer look."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Flag:
    """One finding: ``level`` "bad" (the result is likely wrong) or "warn" (look closer)."""

    level: Literal["bad", "warn"]
    title: str
    detail: str


def registration_flags(
    metrics: dict[str, Any],
    evaluation: dict[str, Any] | None,
    *,
    mass_below: float,
    inverse_mm: float,
) -> list[Flag]:
    """Flags of ``metrics.json`` (and ``evaluation.json``), worst first.

    Args:
        mass_below: flag a last-round transported mass below this share (``output.flag_mass_below``).
        inverse_mm: flag inverse errors whose p95 (p99 for the dense field) exceeds this,
            mm (``output.flag_inverse_mm``).
    """
    flags: list[Flag] = []
    jacobian = metrics.get("jacobian")
    if jacobian and jacobian["folding_fraction"] > 0:
        flags.append(
            Flag(
                "bad",
                "Folding",
                f"det J <= 0 at {100 * jacobian['folding_fraction']:.2f} % of the "
                f"{jacobian['points']} grid points (min det J {jacobian['min']:.3f}): the transform "
                'is not one-to-one there; smooth.model = "svf" cannot fold',
            )
        )
    before, after = metrics["residual_before"]["mean_mm"], metrics["residual_after"]["mean_mm"]
    if after > before:
        flags.append(
            Flag(
                "bad",
                "Worse than no registration",
                f"mean residual distance {before:.2f} mm before, {after:.2f} mm after",
            )
        )
    if evaluation and evaluation["after"]["mean_mm"] > evaluation["before"]["mean_mm"]:
        flags.append(
            Flag(
                "bad",
                "Landmarks moved apart",
                f"mean TRE {evaluation['before']['mean_mm']:.2f} mm before, "
                f"{evaluation['after']['mean_mm']:.2f} mm after",
            )
        )
    mass = metrics.get("transported_mass")
    if mass is not None and mass < mass_below:
        flags.append(
            Flag(
                "warn",
                "Low transported mass",
                f"{100 * mass:.1f} % of the mass was matched in the last round (flag below "
                f"{100 * mass_below:.0f} %, output.flag_mass_below): large parts of the clouds "
                "have no counterpart within match.reach",
            )
        )
    consistency = metrics.get("inverse_consistency_mm")
    if consistency and consistency["p95_mm"] > inverse_mm:
        flags.append(
            Flag(
                "warn",
                "Large inverse-consistency error",
                f"|phi^-1(phi(x)) - x| p95 {consistency['p95_mm']:.2f} mm, max "
                f"{consistency['max_mm']:.2f} mm (flag above {inverse_mm:g} mm, "
                "output.flag_inverse_mm)",
            )
        )
    dense = metrics.get("dense_field")
    if dense and dense["inverse_residual_mm"]["p99"] > inverse_mm:
        flags.append(
            Flag(
                "warn",
                "Fixed -> moving field inverts the transform poorly",
                f"|phi(x) - y| over its grid: p99 {dense['inverse_residual_mm']['p99']:.2f} mm "
                f"(flag above {inverse_mm:g} mm, output.flag_inverse_mm)",
            )
        )
    return flags
