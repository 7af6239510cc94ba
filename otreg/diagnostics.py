"""Signs that a registration went wrong, without ground truth.

A registration of two scans of one patient's lungs matches most of the source's mass, all over
the lungs, with a fold-free and (for the svf model) invertible field. A pair of two different
patients, a mirrored or half-missing scan, or a rigid start in the wrong orientation leaves
large parts of the source unmatched, or a field that folds. These checks read what the run
measured anyway; their thresholds live in ``checks`` of the config schema.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import ChecksConfig

#: a region must hold at least this share of the source's mass to be judged on its own
_REGION_SHARE = 0.05


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


def suspect_checks(
    metrics: dict[str, Any],
    points: np.ndarray,
    weights: np.ndarray,
    confidence: np.ndarray,
    checks: ChecksConfig,
) -> dict[str, Any]:
    """metrics.json's "checks": the measures and the list of "flags" (empty: nothing suspect).

    Args:
        metrics: the run's metrics so far ("jacobian", "inverse_consistency_mm" when measured).
        points, weights: the registered source cloud, (N, 3) mm and (N,).
        confidence: (N,) matched fraction of each source point's mass in the last round.
        checks: the thresholds.
    """
    w = weights / weights.sum()
    measures: dict[str, Any] = {
        "matched_mass": float(w @ confidence),
        "lowest_region_matched_mass": region_mass(points, weights, confidence),
    }
    flags = []
    if measures["matched_mass"] < checks.min_matched_mass:
        flags.append(
            f"only {measures['matched_mass']:.0%} of the source's mass is matched "
            f"(checks.min_matched_mass = {checks.min_matched_mass:g}): are the two scans of "
            "one patient, both whole, and the rigid start right?"
        )
    if measures["lowest_region_matched_mass"] < checks.min_region_matched_mass:
        flags.append(
            f"one region of the source is matched at {measures['lowest_region_matched_mass']:.0%}"
            f" of its mass (checks.min_region_matched_mass = {checks.min_region_matched_mass:g})"
            ": part of the anatomy has no partner"
        )
    jacobian = metrics.get("jacobian")
    if jacobian and jacobian["min"] <= 0:
        flags.append(
            f"the field folds: det J reaches {jacobian['min']:.3g} "
            f"on {jacobian['folding_fraction']:.2%} of the grid"
        )
    inverse = metrics.get("inverse_consistency_mm")
    if inverse and inverse["p95_mm"] > checks.max_inverse_error_mm:
        flags.append(
            f"the inverse is {inverse['p95_mm']:.2f} mm off at the 95th percentile "
            f"(checks.max_inverse_error_mm = {checks.max_inverse_error_mm:g})"
        )
    return {**measures, "flags": flags}
