"""report.html: made by every registration of the sample pair, self-contained, with the numbers
of metrics.json; the landmark section of ``otreg evaluate``; ``otreg report``; the page without
pictures when OpenGL is unavailable or drawing is too slow; and the page in a real browser.

One quick registration of the sample pair (module fixture) serves every test."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import helpers
import numpy as np
import pytest
from helpers import SOURCE, SOURCE_LANDMARKS, TARGET, TARGET_LANDMARKS, machine_lock

import otreg
from otreg.report.build import ReportClouds, report_html

REPO = Path(__file__).resolve().parents[1]
QUICK = [
    "input.points=1000",
    "rigid.points=400",
    "rigid.iterations=5",
    "rigid.principal_axes=false",
    "output.grid_spacing=16",
]


class _Page(HTMLParser):
    """Every start tag of a page with its attributes, and its text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]


def _decoded_images(page: _Page) -> list[tuple[int, int]]:
    """(width, height) of every <img>, decoded from its data URI with Pillow."""
    from PIL import Image

    sizes = []
    for attrs in page.all("img"):
        head, _, data = attrs["src"].partition(",")
        assert head in ("data:image/webp;base64", "data:image/png;base64"), head
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            image.load()
            sizes.append(image.size)
    return sizes


@pytest.fixture(scope="module")
def registration(tmp_path_factory):
    """The sample pair registered quickly, then evaluated on its landmarks (report updated)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("report") / "out"
    done = otreg.run(SOURCE, TARGET, out, overrides=QUICK)
    first = (out / "report.html").read_text()
    otreg.evaluate(out, SOURCE_LANDMARKS, TARGET_LANDMARKS, report=True)
    return out, done, first


def test_every_registration_writes_a_self_contained_report(registration):
    out, _, first = registration
    assert not (out / "report.md").exists()
    page = _Page(first)
    # the pictures: embedded, decodable, two of them (overlay and fields)
    assert sorted(a["id"] for a in page.all("img")) == ["render-fields", "render-overlay"]
    assert all(w >= 400 and h >= 400 for w, h in _decoded_images(page))
    # plots inline: residual per step, moved per round, solver, match distance, det J
    titles = [t.strip() for t in page.text]
    for title in (
        "Residual distance per step",
        "Points moved per round",
        "Solver convergence",
        "Match distance",
        "Jacobian determinant",
    ):
        assert title in titles, title
    assert len(page.all("svg")) == 5
    # nothing is fetched: no scripts, styles or images from elsewhere
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    for _, attrs in page.tags:
        for key in ("src", "href"):
            assert not attrs.get(key, "data:").startswith(("http", "//", "file")), attrs
    assert "Pictures skipped" not in first
    # its time is in metrics.json
    times = json.loads((out / "metrics.json").read_text())["times"]
    assert times["report_s"] >= times["report_pictures_s"] > 0


def test_the_report_names_the_numbers_of_metrics_json(registration):
    out, done, _ = registration
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["residual_after"] == done.registration.metrics["residual_after"]
    text = (out / "report.html").read_text()
    before, after = metrics["residual_before"]["mean_mm"], metrics["residual_after"]["mean_mm"]
    assert f"{before:.2f} → {after:.2f} mm" in text
    assert f"{100 * metrics['transported_mass']:.1f} %" in text
    j = metrics["jacobian"]
    assert f"{j['min']:.2f} / {j['median']:.2f}" in text
    assert f"{100 * j['folding_fraction']:.2f} % of {j['points']} grid points" in text
    for r in metrics["rounds"]:  # one row per round, its residual and the points' move
        mean, p95 = r["residual_after"]["mean_mm"], r["residual_after"]["p95_mm"]
        assert (
            f"<td class=l>round {r['round']}</td><td>{r['blur_mm']:g}</td><td>{r['sigma_mm']:g}</td>"
            in text
        )
        assert f"<td>{r['moved_mm']:.3f}</td><td>{mean:.2f} / {p95:.2f}</td>" in text
    # the config and the provenance
    assert escape((out / "config.resolved.toml").read_text()) in text
    run = json.loads((out / "run.json").read_text())
    assert run["inputs"]["source"]["sha256"] in text and run["created"] in text


def test_evaluate_adds_the_landmarks(registration):
    out, _, first = registration
    assert "Worst landmarks" not in first
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["landmarks"] == 80 and len(evaluation["tre_after_mm"]) == 80
    tre = np.asarray(evaluation["tre_after_mm"])
    assert evaluation["after"]["mean_mm"] == pytest.approx(tre.mean())
    assert evaluation["after"]["mean_mm"] < evaluation["before"]["mean_mm"]
    text = (out / "report.html").read_text()
    page = _Page(text)
    assert "Landmark TRE" in [t.strip() for t in page.text]
    assert (
        f"{evaluation['before']['mean_mm']:.2f} → {evaluation['after']['mean_mm']:.2f} mm" in text
    )
    worst = int(np.argmax(tre))  # the first row of the worst-landmarks table
    worst_table = text.split("Worst landmarks")[1].split("</table>")[0]
    rows = worst_table.split("<tr>")[2:]  # after the header row
    assert len(rows) == 10 and rows[0].startswith(f"<td class=l>{worst + 1}</td>")
    assert len(page.all("img")) == 2 and len(page.all("svg")) == 6


def test_otreg_report_rewrites_the_page(run_otreg, registration, tmp_path):
    out, _, _ = registration
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "report.html").unlink()
    done = run_otreg("report", str(copy), "--no-pictures")
    assert done.stdout.strip() == str(copy / "report.html")
    page = _Page((copy / "report.html").read_text())
    assert not page.all("img") and len(page.all("svg")) == 6  # landmarks kept
    assert "Pictures skipped: output.report_pictures = false" in "".join(page.text)
    # a folder that is not an output folder: one message, exit 2, nothing written
    bad = run_otreg("report", str(tmp_path), check=False)
    assert bad.returncode == 2 and "metrics.json" in bad.stderr and "Traceback" not in bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_the_pictures_need_neither_opengl_nor_vtk_rendering(tmp_path):
    """No OpenGL at all (no EGL vendor library, OSMesa forced: what made VTK kill its
    process): the pictures are drawn all the same, and nothing of VTK's rendering is loaded."""
    script = (
        "import sys, otreg\n"
        f"done = otreg.run({str(SOURCE)!r}, {str(TARGET)!r}, {str(tmp_path / 'out')!r}, "
        f"overrides={[*QUICK, 'input.points=400', 'output.dense_field=false']!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('vtkmodules.vtkRendering', "
        "'pyvista.plotting', 'matplotlib'))))\n"
    )
    env = {
        **helpers.otreg_env(),
        "__EGL_VENDOR_LIBRARY_FILENAMES": str(tmp_path / "none.json"),
        "VTK_DEFAULT_OPENGL_WINDOW": "vtkOSOpenGLRenderWindow",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    page = _Page((tmp_path / "out" / "report.html").read_text())
    assert sorted(a["id"] for a in page.all("img")) == ["render-fields", "render-overlay"]
    assert "Pictures skipped" not in " ".join(page.text)


def test_the_pictures_put_the_patients_right_on_the_left_and_colour_the_fields():
    """Radiological convention: a cloud on the patient's right (RAS +x) is drawn on the left
    of both views, one above (superior) in the upper half of the coronal view, one in front
    (anterior) in the upper half of the axial view; the largest displacement in the colour
    map's last colour (viridis' yellow), an unmatched point in its first (magma's black)."""
    from otreg.report import raster

    rng = np.random.default_rng(0)
    right_superior_anterior = rng.normal(size=(300, 3)) + [40.0, 40.0, 40.0]
    left_inferior_posterior = rng.normal(size=(300, 3)) - 40.0
    picture = np.asarray(
        raster.draw_overlay(
            right_superior_anterior, left_inferior_posterior, right_superior_anterior
        ),
        dtype=np.float64,
    )
    source, target = raster._rgb(raster.SOURCE_COLOUR), raster._rgb(raster.TARGET_COLOUR)
    panel = raster.PANEL
    for column in (0, 1):  # coronal, axial
        view = picture[:panel, column * panel : (column + 1) * panel]
        # pixels blended at OPACITY over white
        for colour, (top, left) in ((source, (True, True)), (target, (False, False))):
            shade = 255 + raster.OPACITY * (colour - 255)
            rows, columns = np.nonzero((np.abs(view - shade) < 2).all(axis=2))
            assert len(rows) > 100
            assert (np.median(rows) < panel / 2) == top
            assert (np.median(columns) < panel / 2) == left
    points = rng.normal(size=(200, 3)) * 20
    displacement = np.linspace(0.0, 5.0, 200)
    confidence = np.ones(200)
    confidence[-1] = 0.0
    fields = np.asarray(raster.draw_fields(points, displacement, confidence), dtype=np.float64)
    yellow = raster.colour_map("viridis", np.array([1.0]))[0]
    black = raster.colour_map("magma", np.array([0.0]))[0]
    for colour, half in ((yellow, fields[:, :panel]), (black, fields[:, panel:])):
        plotted = half[: panel - 60]  # above the colour bar
        assert (np.abs(plotted - np.rint(colour)) < 1.5).all(axis=2).sum() >= 9, colour


def test_output_report_pictures_false_draws_nothing(registration):
    out, done, _ = registration
    registration_result = done.registration
    clouds = ReportClouds.of(
        registration_result.transform,
        registration_result.source.points,
        registration_result.target.points,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    config = otreg.load_config(done.config, output__report_pictures=False)
    text, timings = report_html(metrics, {}, config, "", clouds)
    assert "Pictures skipped: output.report_pictures = false" in text
    assert "<img" not in text and not timings


def test_flags():
    from otreg.diagnostics import flag
    from otreg.report.flags import registration_flags

    metrics = {
        "checks": {"flags": [flag("warn", "Low matched mass", "20 %"), flag("bad", "Folding", "")]},
        "dense_field": {"inverse_residual_mm": {"p99": 2.0}},
    }
    evaluation = {"before": {"mean_mm": 5.0}, "after": {"mean_mm": 6.0}}
    titles = [f.title for f in registration_flags(metrics, evaluation, 1.0)]
    assert titles == [
        "Folding",
        "Landmarks moved apart",
        "Low matched mass",
        "Fixed -> moving field inverts the transform poorly",
    ]
    good = {"checks": {"flags": []}, "dense_field": {"inverse_residual_mm": {"p99": 0.1}}}
    assert (
        registration_flags(good, {"before": {"mean_mm": 5.0}, "after": {"mean_mm": 1.0}}, 1.0) == []
    )


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's headless Chromium, installed by tests/setup/install_chromium.sh when missing
    (as root); skips, saying how to install it, where it cannot be installed."""
    path = shutil.which("chromium")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        with machine_lock("setup"):  # apt-get: one set-up script at a time (pytest -n)
            subprocess.run(
                ["sh", str(REPO / "tests" / "setup" / "install_chromium.sh")],
                capture_output=True,
                timeout=900,
            )
        path = shutil.which("chromium")
    if path is None:
        pytest.skip(
            "no chromium: run 'sh tests/setup/install_chromium.sh' as root (apt-get install "
            "chromium) to check report.html in a real browser"
        )
    return path


@pytest.mark.slow
def test_the_report_renders_in_a_real_browser(registration, chromium, tmp_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed: pip install -e '.[test]'"
    )
    from PIL import Image

    out, _, _ = registration
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "report.html").resolve().as_uri(), wait_until="load")
        images = page.evaluate(
            "() => Array.from(document.images, i => [i.id, i.complete, i.naturalWidth, "
            "i.naturalHeight, i.getBoundingClientRect().width])"
        )
        plots = page.evaluate(
            "() => Array.from(document.querySelectorAll('svg.plot'), s => "
            "[s.querySelector('title').textContent, s.getBoundingClientRect().width, "
            "s.getBoundingClientRect().height, s.querySelectorAll('path, polyline, circle').length])"
        )
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert not errors, errors
    # only the page itself and its data URIs: nothing from the network or other files
    assert all(url.startswith("data:") for url in requests[1:]), requests
    assert len(images) == 2
    for name, complete, width, height, shown in images:
        assert complete and width >= 400 and height >= 400 and shown > 300, name
    assert len(plots) == 6  # five of the registration, one of the landmarks
    for title, width, height, marks in plots:
        assert width > 300 and height > 100 and marks > 0, title
    with Image.open(tmp_path / "page.png") as shot:
        pixels = np.asarray(shot.convert("L"), dtype=np.float64)
    assert pixels.shape[0] > 2000  # the whole page
    # not blank: a good share of the page is drawn (text, points, plots), not background
    background = np.median(pixels)
    assert np.mean(np.abs(pixels - background) > 30) > 0.01


def test_output_report_false_writes_no_page(tmp_path):
    config = otreg.load_config(
        None,
        [*QUICK, "input.points=400", "output.dense_field=false", "output.report=false"],
        match__blur=[4.0],
    )
    done = otreg.run(SOURCE, TARGET, tmp_path / "out", config)
    assert not (done.out / "report.html").exists()
    assert not any(
        k.startswith("report") for k in json.loads((done.out / "metrics.json").read_text())["times"]
    )
    # evaluate respects the run's choice: evaluation.json, no page
    otreg.evaluate(done.out, SOURCE_LANDMARKS, TARGET_LANDMARKS, report=True, jacobian=False)
    assert (done.out / "evaluation.json").is_file() and not (done.out / "report.html").exists()


def test_svg_plots_escape_their_text_and_round_their_ticks():
    from otreg.report import svg

    assert svg.nice_ticks(0.0, 9.3) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert svg.nice_ticks(0.001, 0.0042)[0] <= 0.001 and svg.nice_ticks(5.0, 5.0)[-1] >= 5.0
    chart = svg.line_chart(["a<b", "c"], {"x & y": [1.0, None]}, title="<t>", y_label="mm")
    page = _Page(chart)
    assert page.all("svg") and "<t>" in page.text and "x & y" in "".join(page.text)
    assert "<t>" not in chart and "a<b" not in chart
    logs = svg.line_chart(["1", "2"], {"e": [1e-4, 3e-3]}, title="t", y_label="", log_y=True)
    assert ">1e-4<" in logs and ">1e-2<" in logs
