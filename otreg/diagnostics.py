"""Signs that a registration went wrong, without ground truth.

A registration of two scans of one patient's lungs matches most of the source's mass, all over
the lungs, with a fold-free and (for the svf model) invertible field, and ends closer to the
target than it started. A pair of two different patients, a mirrored or half-missing scan, or
a rigid start in the wrong orientation leaves large parts of the source unmatched, or a field
that folds. These checks read what the run measured anyway; their thresholds live in
``checks`` of the config schema, and ``report.html`` shows what they find.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import ChecksConfig

#: a region must hold at least this share of the source's mass to be judged on its own
_REGION_SHARE = 0.05


def flag(level: str, title: str, detail: str) -> dict[str, str]:
    """One finding: ``level`` "bad" (the result is likely wrong) or "warn" (look closer)."""
    return {"level": level, "title": title, "detail": detail}


def region_mass(points: np.ndarray, weights: np.ndarray, confidence: np.ndarray) -> float:
    """The smallest matched fraction of the source's mass in one of the eight octants about its
    centre of mass (those holding at least 5 % of it): (N, 3) mm, (N,) weights, (N,) matched
    fraction of each point's mass (1 = all of it transported)."""
    w = weights / weights.sum()
    octant = ((points - w @ points) > 0) @ np.array([1, 2, 4])
    fractions = [
        float(w[octant == k] @ confidence[octant == k] / w[octant == k].sum())
        for k in range(8)
        if w[octant == k].sum() >= _REGION_SHARE
    ]
    return min(fractions, default=1.0)


def half_mass(points: np.ndarray, weights: np.ndarray, confidence: np.ndarray) -> float:
    """The smallest matched fraction of the source's mass in one of the six halves of it cut
    through its centre of mass across x, y or z: (N, 3) mm, (N,) weights, (N,) matched fraction
    of each point's mass. A partner missing one half (a cut scan) shows here even where the
    other mesh's own partnerless sheets keep octants from telling."""
    w = weights / weights.sum()
    above = points - w @ points > 0
    fractions = [
        float(w[side] @ confidence[side] / w[side].sum())
        for side in (*above.T, *(~above).T)
        if w[side].sum() > 0
    ]
    return min(fractions, default=1.0)


def suspect_checks(
    metrics: dict[str, Any],
    points: np.ndarray,
    weights: np.ndarray,
    confidence: np.ndarray,
    checks: ChecksConfig,
) -> dict[str, Any]:
    """metrics.json's "checks": the measures and the "flags" raised (:func:`flag` dicts, worst
    first; empty: nothing suspect).

    Args:
        metrics: the run's metrics so far ("residual_before", "residual_after", "jacobian",
            "inverse_consistency_mm" where measured).
        points, weights: the registered source cloud, (N, 3) mm and (N,).
        confidence: (N,) matched fraction of each source point's mass in the last round.
        checks: the thresholds.
    """
    w = weights / weights.sum()
    matched = float(w @ confidence)
    region = region_mass(points, weights, confidence)
    half = half_mass(points, weights, confidence)
    flags = []
    jacobian = metrics.get("jacobian")
    if jacobian and jacobian["min"] <= 0:
        flags.append(
            flag(
                "bad",
                "Folding",
                f"det J <= 0 at {jacobian['folding_fraction']:.2%} of the grid points (min det J "
                f"{jacobian['min']:.3f}): the transform is not one-to-one there; "
                'smooth.model = "svf" cannot fold',
            )
        )
    before = metrics.get("residual_before", {}).get("mean_mm")
    after = metrics.get("residual_after", {}).get("mean_mm")
    if before is not None and after is not None and after > before:
        flags.append(
            flag(
                "bad",
                "Worse than no registration",
                f"mean residual distance {before:.2f} mm before, {after:.2f} mm after",
            )
        )
    if matched < checks.min_matched_mass:
        flags.append(
            flag(
                "warn",
                "Low matched mass",
                f"{matched:.0%} of the source's mass is matched (flag below "
                f"checks.min_matched_mass = {checks.min_matched_mass:g}): are both scans of one "
                "patient, whole, and the rigid start right?",
            )
        )
    if region < checks.min_region_matched_mass:
        flags.append(
            flag(
                "warn",
                "A region without partner",
                f"one octant of the source is matched at {region:.0%} of its mass (flag below "
                f"checks.min_region_matched_mass = {checks.min_region_matched_mass:g})",
            )
        )
    if half < checks.min_half_matched_mass:
        flags.append(
            flag(
                "warn",
                "Half of the source without partner",
                f"one half of the source is matched at {half:.0%} of its mass (flag below "
                f"checks.min_half_matched_mass = {checks.min_half_matched_mass:g}): is the "
                "target whole?",
            )
        )
    inverse = metrics.get("inverse_consistency_mm")
    if inverse and inverse["p95_mm"] > checks.max_inverse_error_mm:
        flags.append(
            flag(
                "warn",
                "Large inverse-consistency error",
                f"|phi^-1(phi(x)) - x| p95 {inverse['p95_mm']:.2f} mm, max "
                f"{inverse['max_mm']:.2f} mm (flag above checks.max_inverse_error_mm = "
                f"{checks.max_inverse_error_mm:g})",
            )
        )
    return {
        "matched_mass": matched,
        "lowest_region_matched_mass": region,
        "lowest_half_matched_mass": half,
        "flags": flags,
    }
