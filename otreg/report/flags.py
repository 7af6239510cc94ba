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
    metrics: dict[str, Any], evaluation: dict[str, Any] | None, inverse_mm: float
) -> list[Flag]:
    """The run's suspect checks (``metrics.json``'s "checks", :mod:`otreg.diagnostics`), then
    what only the outputs and ``evaluation.json`` tell, worst first.

    Args:
        inverse_mm: flag a dense fixed -> moving field whose inverse residual p99 exceeds
            this, mm (``checks.max_inverse_error_mm``).
    """
    flags = [Flag(**found) for found in metrics.get("checks", {}).get("flags", [])]
    if evaluation and evaluation["after"]["mean_mm"] > evaluation["before"]["mean_mm"]:
        flags.append(
            Flag(
                "bad",
                "Landmarks moved apart",
                f"mean TRE {evaluation['before']['mean_mm']:.2f} mm before, "
                f"{evaluation['after']['mean_mm']:.2f} mm after",
            )
        )
    dense = metrics.get("dense_field")
    if dense and dense["inverse_residual_mm"]["p99"] > inverse_mm:
        flags.append(
            Flag(
                "warn",
                "Fixed -> moving field inverts the transform poorly",
                f"|phi(x) - y| over its grid: p99 {dense['inverse_residual_mm']['p99']:.2f} mm "
                f"(flag above checks.max_inverse_error_mm = {inverse_mm:g})",
            )
        )
    return sorted(flags, key=lambda f: f.level != "bad")
