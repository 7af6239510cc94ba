"""report.html: one self-contained page (no scripts, no network) from a registration's numbers,
pictures and plots. Assembled by :mod:`otreg.report.build`; this module only writes markup."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from html import escape
from typing import Any

from .flags import Flag
from .raster import SOURCE_COLOUR, TARGET_COLOUR

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
 color:#1d1d1f;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ccd;
 padding-bottom:4px}h3{font-size:14px;margin:14px 0 6px}
.sub{color:#555;font-size:13px;margin:0 0 12px;word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
.card{background:#fff;border:1px solid #dde;border-radius:6px;padding:8px 10px}
.card .k{font-size:12px;color:#555}.card .v{font-size:19px;font-weight:600;margin-top:2px}
.card .n{font-size:11px;color:#666}
.card.bad{border-color:#c62828;background:#fdecea}.card.warn{border-color:#ef8f00;background:#fff6e5}
.flags{list-style:none;padding:0;margin:12px 0}.flags li{padding:6px 10px;border-radius:5px;margin:4px 0;
 font-size:14px}
.flag-bad{background:#fdecea;border-left:5px solid #c62828}.flag-warn{background:#fff6e5;
 border-left:5px solid #ef8f00}.flag-ok{background:#e8f5e9;border-left:5px solid #2e7d32}
.note{background:#fff6e5;border-left:5px solid #ef8f00;padding:6px 10px;font-size:14px}
figure{margin:0 0 14px;background:#fff;border:1px solid #dde;border-radius:6px;padding:8px}
figure img{display:block;width:100%;max-width:860px;height:auto;margin:0 auto}
figcaption{font-size:12px;color:#444;margin-top:6px}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;vertical-align:-1px;margin:0 3px 0 8px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:12px}
.plots figure{margin:0}.plots svg{width:100%;height:auto;display:block}
table{border-collapse:collapse;font-size:13px;background:#fff;margin:4px 0 10px}
td,th{border:1px solid #dde;padding:3px 8px;text-align:right}th{background:#eef0f4}
td.l,th.l{text-align:left;white-space:nowrap}
pre{background:#fff;border:1px solid #dde;padding:8px;font-size:12px;overflow:auto;max-height:420px}
details{margin:8px 0}summary{cursor:pointer;font-weight:600;font-size:14px}
footer{color:#777;font-size:12px;margin-top:30px}
"""


@dataclass
class Card:
    """One number in the summary row: label, value, a note below, an optional flag level."""

    label: str
    value: str
    note: str = ""
    level: str = ""


@dataclass
class Page:
    """Everything the page shows, already formatted or computed."""

    title: str
    subtitle: str
    cards: list[Card]
    flags: list[Flag]
    pictures: dict[str, tuple[str, bytes]]
    pictures_note: str | None
    plots: list[tuple[str, str]]  # (caption, svg)
    landmark_plots: list[tuple[str, str]] = field(default_factory=list)
    landmark_table: list[list[str]] = field(default_factory=list)
    landmark_header: str = ""
    rounds_table: list[list[str]] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    details: list[tuple[str, str]] = field(default_factory=list)  # (title, html)
    config_text: str = ""
    run: dict[str, Any] = field(default_factory=dict)
    footer: str = ""


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def table(header: list[str], rows: list[list[str]], *, left: int = 1) -> str:
    """An HTML table, one row per line; the first ``left`` columns left-aligned."""

    def cells(tag: str, values: list[str]) -> str:
        return "".join(
            f"<{tag}{' class=l' if i < left else ''}>{escape(v)}</{tag}>"
            for i, v in enumerate(values)
        )

    lines = ["<table>", f"<tr>{cells('th', header)}</tr>"]
    lines += [f"<tr>{cells('td', row)}</tr>" for row in rows]
    lines.append("</table>")
    return "\n".join(lines)


_PICTURE_CAPTIONS = {
    "slices": (
        "The images: the fixed (target) image in green, the moving (source) image in magenta, "
        "fused (grey where they agree), before (top) and after (bottom) registration; coronal "
        "and axial planes through the target's centre, the patient's right on the left. After: "
        "the moving image resampled through the transform (linear interpolation)."
    ),
    "overlay": (
        "Before (top) and after (bottom): the {source} source (moving) and, after, the warped "
        "source, over the {target} target (fixed). Parallel projections of the whole clouds, "
        "coronal (seen from the front) and axial (seen from the feet); the patient's right "
        "is on the left (radiological convention)."
    ),
    "fields": (
        "The source points (coronal projection) coloured by the length of their displacement "
        "(mm; rigid part included) and by their match confidence in the last round (0-1; "
        "low where a point found no counterpart within match.reach)."
    ),
}


def _pictures(page: Page) -> list[str]:
    out = ["<h2 id=pictures>Pictures</h2>"]
    if page.pictures_note:
        out.append(f'<p class="note">Pictures skipped: {escape(page.pictures_note)}</p>')
    swatches = {
        "source": f'<span class="swatch" style="background:{SOURCE_COLOUR}"></span>orange',
        "target": f'<span class="swatch" style="background:{TARGET_COLOUR}"></span>blue',
    }
    order = [*_PICTURE_CAPTIONS, *sorted(set(page.pictures) - set(_PICTURE_CAPTIONS))]
    for name in (n for n in order if n in page.pictures):
        mime, data = page.pictures[name]
        caption = _PICTURE_CAPTIONS.get(name, name).format(**swatches)
        out.append(
            f'<figure><img class="render" id="render-{escape(name)}" alt="{escape(name)} '
            f'picture" src="{data_uri(mime, data)}"><figcaption>{caption}</figcaption></figure>'
        )
    return out


def _plots(plots: list[tuple[str, str]]) -> list[str]:
    out = ['<div class="plots">']
    for caption, svg in plots:
        out.append(f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>")
    out.append("</div>")
    return out


def render_page(page: Page) -> str:
    """The whole HTML document of ``page``."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(page.title)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{escape(page.title)}</h1>",
        f'<p class="sub">{page.subtitle}</p>',
        '<section id="summary"><div class="cards">',
    ]
    for card in page.cards:
        level = f" {card.level}" if card.level else ""
        out.append(
            f'<div class="card{level}"><div class="k">{escape(card.label)}</div>'
            f'<div class="v">{escape(card.value)}</div><div class="n">{escape(card.note)}</div></div>'
        )
    out.append('</div><ul class="flags" id="flags">')
    for flag in page.flags:
        out.append(
            f'<li class="flag-{flag.level}"><b>{escape(flag.title)}</b>: {escape(flag.detail)}</li>'
        )
    if not page.flags:
        out.append(
            '<li class="flag-ok"><b>No flags</b>: no folding, mass and inverse within bounds</li>'
        )
    out.append("</ul></section>")
    out += _pictures(page)
    out.append("<h2 id=plots>Plots</h2>")
    out += _plots(page.plots)
    if page.landmark_plots or page.landmark_table:
        out.append("<h2 id=landmarks>Landmarks</h2>")
        out.append(f"<p>{escape(page.landmark_header)}</p>")
        out += _plots(page.landmark_plots)
        out.append("<h3>Worst landmarks (after registration)</h3>")
        out.append(
            table(
                ["row", "TRE before (mm)", "TRE after (mm)", "target x", "y", "z (mm RAS)"],
                page.landmark_table,
            )
        )
    out.append("<h2 id=steps>Steps and solver</h2>")
    out.append(
        table(
            [
                "step",
                "blur",
                "sigma",
                "reach",
                "regression",
                "iterations",
                "marginal error",
                "mass",
                "OT gap",
                "moved (mm)",
                "residual mean / p95 (mm)",
                "time (s)",
            ],
            page.rounds_table,
            left=1,
        )
    )
    if page.times:
        out.append(
            table(
                ["step", "time (s)"],
                [[k.removesuffix("_s"), f"{v:.2f}"] for k, v in page.times.items()],
            )
        )
    for title, body in page.details:
        out.append(f"<h3>{escape(title)}</h3>{body}")
    out.append(
        "<h2 id=config>Configuration</h2><details><summary>config.resolved.toml "
        "(otreg register -c this file reproduces the run)</summary>"
        f"<pre>{escape(page.config_text)}</pre></details>"
    )
    out.append("<h2 id=provenance>Provenance</h2>")
    out.append(_provenance(page.run))
    out.append(f"<footer>{escape(page.footer)}</footer></main></body></html>")
    return "\n".join(out) + "\n"


def _provenance(run: dict[str, Any]) -> str:
    if not run:
        return "<p>run.json not found.</p>"
    rows = [["created", str(run.get("created", ""))]]
    for role, info in run.get("inputs", {}).items():
        rows.append([f"{role} file", str(info.get("path", ""))])
        rows.append([f"{role} sha256", str(info.get("sha256", ""))])
    rows += [
        ["device", str(run.get("device", ""))],
        ["host", str(run.get("host", ""))],
        ["seed", str(run.get("seed", ""))],
    ]
    if "preset" in run:
        rows.append(["preset", f"{run['preset']['name']} ({run['preset']['chosen_by']})"])
    rows.append(["command", " ".join(run.get("argv", []))])
    versions = ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items() if v)
    rows.append(["versions", versions])
    return table(["", ""], rows, left=2) + (
        "<details><summary>run.json</summary>"
        f"<pre>{escape(json.dumps(run, indent=2))}</pre></details>"
    )
