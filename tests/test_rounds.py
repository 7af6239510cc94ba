"""The non-rigid rounds: repeated rounds stop once converged (match.tolerance)."""

from __future__ import annotations

import numpy as np

import otreg
from otreg.pointcloud import PointCloud
from otreg.report.build import report_html


def _pair():
    """A 600-point cloud and a smoothly moved, independently sampled copy (mm)."""
    rng = np.random.default_rng(0)
    source, target = rng.uniform(0, 100, (600, 3)), rng.uniform(0, 100, (600, 3))
    target = target + 4 * np.sin(target[:, [1, 2, 0]] / 30)
    return PointCloud(source, np.ones(600)), PointCloud(target, np.ones(600))


def _register(tolerance: float):
    source, target = _pair()
    config = otreg.load_config(
        overrides=["match.blur=[4, 2, 2, 2, 1]", "smooth.sigma=10", f"match.tolerance={tolerance}"]
    )
    return otreg.register(source, target, config).metrics


def test_repeated_rounds_stop_once_the_points_stop_moving():
    every = _register(0.0)
    assert [r["round"] for r in every["rounds"]] == [1, 2, 3, 4, 5] and every[
        "rounds_skipped"
    ] == []
    # a tolerance above what round 2 moves: its repeats 3 and 4 are skipped, never the last
    # round nor a round with new settings
    loose = _register(every["rounds"][1]["moved_mm"] + 1.0)
    assert [r["round"] for r in loose["rounds"]] == [1, 2, 5] and loose["rounds_skipped"] == [3, 4]
    run = {
        "inputs": {"source": {"path": "a"}, "target": {"path": "b"}},
        "device": "cpu",
        "versions": {"otreg": "0"},
        "created": "now",
    }
    report, _ = report_html(loose, run, otreg.Config(), "", None)
    assert "<td class=l>round 5</td><td>1</td>" in report
    for k in (3, 4):
        assert (
            f"<td class=l>round {k}</td>" + "<td></td>" * 9 + "<td>skipped (match.tolerance)</td>"
            in report
        )
    # a tolerance between the moves of rounds 2 and 3 stops after round 3
    moves = [r["moved_mm"] for r in every["rounds"]]
    assert moves[2] < moves[1]
    middle = _register((moves[1] + moves[2]) / 2)
    assert [r["round"] for r in middle["rounds"]] == [1, 2, 3, 5]


def test_each_round_reports_where_its_time_went():
    source, target = _pair()
    config = otreg.load_config(
        overrides=[
            "match.blur=[4, 1]",
            "smooth.sigma=10",
            "smooth.regression=['gaussian', 'ridge']",
            "smooth.model=svf",
            "output.jacobian=false",
        ]
    )
    metrics = otreg.register(source, target, config).metrics
    rounds = metrics["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        t = r["times"]
        assert {"ot_s", "fit_s", "field_s"} <= set(t)
        assert 0 <= t["ot_s"] + t["fit_s"] + t["field_s"] + t.get("svf_s", 0) <= r["time_s"]
    # the velocity grid is built for the last round's transform only
    assert "svf_s" not in rounds[0]["times"] and rounds[1]["times"]["svf_s"] >= 0
    # the steps' times stay numbers (scripts sum them)
    assert all(isinstance(v, float) for v in metrics["times"].values())


def test_a_round_at_the_last_rounds_blur_starts_from_its_potentials(monkeypatch):
    """Round 2 repeats round 1's blur and reach: it starts from round 1's potentials (no
    annealing) and ends where a cold start ends; round 3 (another blur) anneals."""
    import otreg.pipeline
    from otreg.ot import multiscale
    from otreg.stages.match import match

    source, target = _pair()
    config = otreg.load_config(
        overrides=["match.blur=[2, 2, 1]", "smooth.sigma=10", "rigid.enabled=false"]
    )
    starts = []
    warm_start = multiscale.warm_start
    monkeypatch.setattr(
        multiscale, "warm_start", lambda *a, **k: starts.append(1) or warm_start(*a, **k)
    )
    warm = otreg.register(source, target, config)
    assert len(starts) == 1
    monkeypatch.setattr(otreg.pipeline, "match", lambda *a, init=None, **k: match(*a, **k))
    cold = otreg.register(source, target, config)
    assert len(starts) == 1
    iterations = [[r["iterations"] for r in m.metrics["rounds"]] for m in (warm, cold)]
    assert iterations[0][0] == iterations[1][0] and iterations[0][1] < iterations[1][1]
    assert np.abs(warm.moved - cold.moved).max() < 0.05
