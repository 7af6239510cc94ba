"""The ridge fit's smoothness weight chosen from the data (otreg.transforms.ridge_select)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import otreg
from otreg.errors import ConfigError
from otreg.stages.smooth import smooth
from otreg.transforms.ridge_select import CANDIDATES, select_regularization


def noisy_field(noise_mm: float, amplitude_mm: float = 3.0, n: int = 600, seed: int = 0):
    """Points in a 60 mm cube, an affine motion plus a smooth bump of ``amplitude_mm``, and
    values with Gaussian noise of ``noise_mm`` per coordinate."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 60, size=(n, 3))
    truth = 0.02 * points[:, [1, 2, 0]] + 1.5
    truth[:, 2] += amplitude_mm * np.sin(points[:, 0] / 10) * np.cos(points[:, 1] / 12)
    return points, truth, truth + rng.normal(0, noise_mm, size=(n, 3)) if noise_mm else truth


def fit_error(points, truth, values, lam, sigmas=(8.0, 16.0)):
    """Mean error (mm) against ``truth`` of the ridge fit at the points, by a direct solve of
    [[K + lam I, P], [P^T, 0]] [alpha; A] = [y; 0] (unit weights: fit_ridge's problem)."""
    n = len(points)
    d2 = ((points[:, None] - points[None]) ** 2).sum(-1)
    kernel = np.mean([np.exp(-d2 / (2 * s * s)) for s in sigmas], axis=0)
    position = np.column_stack([points - points.mean(0), np.ones(n)])
    system = np.block([[kernel + lam * np.eye(n), position], [position.T, np.zeros((4, 4))]])
    solution = np.linalg.solve(system, np.vstack([values, np.zeros((4, 3))]))
    fitted = kernel @ solution[:n] + position @ solution[n:]
    return np.linalg.norm(fitted - truth, axis=1).mean()


@pytest.mark.parametrize("criterion", ["gcv", "likelihood"])
def test_the_weight_grows_with_the_noise(criterion):
    picks = []
    for noise in (0.1, 0.5, 2.0):
        points, _, values = noisy_field(noise)
        lam, _ = select_regularization(
            points, values, np.ones(len(points)), [8.0, 16.0], criterion=criterion
        )
        picks.append(lam)
    assert picks[0] < picks[1] < picks[2], picks


def test_the_chosen_weight_fits_nearly_as_well_as_the_best_one():
    """GCV's choice is within 15 % of the best candidate's error against the noise-free
    field, and beats weights 30x too small or too large."""
    points, truth, values = noisy_field(1.0)
    lam, _ = select_regularization(points, values, np.ones(len(points)), [8.0, 16.0])
    errors = {c: fit_error(points, truth, values, c) for c in (lam / 30, lam, lam * 30)}
    best = min(fit_error(points, truth, values, c) for c in CANDIDATES[::4])
    assert errors[lam] < 1.15 * best
    assert errors[lam] < errors[lam / 30] and errors[lam] < errors[lam * 30]


def test_no_motion_beyond_affine_gives_the_smoothest_weights():
    """Values that are an affine map plus noise: nothing for the kernels to fit."""
    points, _, values = noisy_field(1.0, amplitude_mm=0.0)
    lam, picks = select_regularization(points, values, np.ones(len(points)), [8.0, 16.0])
    assert lam >= 100 and min(picks.values()) >= 100, picks


def test_matrix_weights_and_zero_weights_are_accepted():
    points, _, values = noisy_field(0.5)
    weights = np.broadcast_to(np.eye(3), (len(points), 3, 3)).copy()
    weights[:50] = 0  # left out
    lam, _ = select_regularization(points, values, weights, [8.0])
    assert CANDIDATES[0] <= lam <= CANDIDATES[-1]
    with pytest.raises(ValueError, match="criterion"):
        select_regularization(points, values, np.ones(len(points)), [8.0], criterion="aic")


def test_smooth_stage_reports_the_chosen_weight():
    points, _, values = noisy_field(0.5, n=300)
    matches = SimpleNamespace(targets=points + values, confidence=np.ones(len(points)))
    info: dict = {}
    smooth(points, np.ones(len(points)), matches, 8.0, regression="ridge",
           regularization="auto", info=info)  # fmt: skip
    lam, _ = select_regularization(points, values, np.ones(len(points)), [8.0])
    assert info["regularization"] == pytest.approx(lam)
    fixed: dict = {}
    smooth(points, np.ones(len(points)), matches, 8.0, regression="ridge",
           regularization=0.3, info=fixed)  # fmt: skip
    assert fixed == {"regularization": 0.3}


def test_config_takes_auto_or_a_positive_number():
    assert otreg.load_config(None, ["smooth.regularization=auto"]).smooth.regularization == "auto"
    assert otreg.load_config(None, ["smooth.regularization=2"]).smooth.regularization == 2.0
    assert otreg.load_config(None, ['smooth.regularization="AUTO"']).smooth.regularization == "auto"
    for bad in ("automatic", "-1", "0", "nan", "[1]"):
        with pytest.raises(
            ConfigError, match='smooth.regularization: must be a positive.* or "auto"'
        ):
            otreg.load_config(None, [f"smooth.regularization={bad}"])


def test_cli_logs_and_records_the_chosen_weight(fast_settings, run_otreg, tmp_path):
    """``otreg register --set smooth.regularization=auto`` on the sample pair (its preset's
    ridge rounds): each ridge round's weight in metrics.json and in the log (-v)."""
    import json

    from helpers import SOURCE, TARGET

    out = tmp_path / "out"
    result = run_otreg(
        "register",
        str(SOURCE),
        str(TARGET),
        "-o",
        str(out),
        *fast_settings,
        "--set",
        "smooth.regularization=auto",
        "--set",
        "output.dense_field=false",
        "--set",
        "output.report=false",
        "-v",
    )
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    ridge = [r for r in rounds if r["regression"] == "ridge"]
    assert ridge and all(CANDIDATES[0] <= r["regularization"] <= CANDIDATES[-1] for r in ridge)
    assert "regularization" not in rounds[0]  # a kernel-average round has none
    assert "ridge smoothness weight from the matches" in result.stderr
    assert 'regularization = "auto"' in (out / "config.resolved.toml").read_text()


def test_a_quadratic_trend_leaves_a_quadratic_motion_to_the_trend():
    """A quadratic motion plus noise: with trend = "quadratic" nothing is left for the kernels
    but noise, and GCV picks a smoother fit than with the affine trend (which must bend its
    kernels to follow the curvature)."""
    rng = np.random.default_rng(7)
    points = rng.uniform(0, 100, size=(400, 3))
    values = np.column_stack(
        [0 * points[:, 0], 0 * points[:, 0], -25 * (1 - points[:, 2] / 250) ** 2]
    ) + rng.normal(0, 0.3, (400, 3))
    quadratic, _ = select_regularization(
        points, values, np.ones(400), [10.0, 20.0], trend="quadratic"
    )
    affine, _ = select_regularization(points, values, np.ones(400), [10.0, 20.0])
    assert quadratic > affine
    assert quadratic >= 100
