"""Small plots written directly as inline SVG text: no plotting library, no import cost.

Each function returns one ``<svg class="plot">`` element with a ``<title>`` (its accessible
name), axes with tick labels and a legend. Coordinates are drawn in a fixed ``viewBox`` and
scale with the page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

WIDTH, HEIGHT = 560, 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 16, 30, 46

#: colours of successive series (colour-blind safe, Okabe-Ito)
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high] (1, 2, 5 x 10^k steps)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _label(value: float) -> str:
    return f"{value:.4g}"


class _Frame:
    """Maps data coordinates to the plot area of the viewBox."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]):
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1.0

    def x(self, value: float) -> float:
        return _LEFT + (value - self.x0) / (self.x1 - self.x0) * (WIDTH - _LEFT - _RIGHT)

    def y(self, value: float) -> float:
        return (
            HEIGHT - _BOTTOM - (value - self.y0) / (self.y1 - self.y0) * (HEIGHT - _TOP - _BOTTOM)
        )


def _open(title: str) -> list[str]:
    return [
        f'<svg class="plot" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{escape(title)}</text>',
    ]


def _axes(
    frame: _Frame,
    x_ticks: Sequence[tuple[float, str]],
    y_ticks: Sequence[float],
    x_label: str,
    y_label: str,
) -> list[str]:
    bottom, left = HEIGHT - _BOTTOM, _LEFT
    parts = [
        f'<line x1="{left}" y1="{bottom}" x2="{WIDTH - _RIGHT}" y2="{bottom}" stroke="#333"/>',
        f'<line x1="{left}" y1="{_TOP}" x2="{left}" y2="{bottom}" stroke="#333"/>',
    ]
    for value in y_ticks:
        y = frame.y(value)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_label(value)}</text>'
        )
    for value, text in x_ticks:
        x = frame.x(value)
        parts.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#333"/>'
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{escape(text)}</text>'
        )
    parts.append(
        f'<text x="{(left + WIDTH - _RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text transform="translate(14 {(bottom + _TOP) / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    return parts


def _legend(names: Sequence[str]) -> list[str]:
    parts = []
    x = float(WIDTH - _RIGHT - 8)
    for i, name in reversed(list(enumerate(names))):
        width = 22 + 6.6 * len(name)
        x -= width
        parts.append(
            f'<rect x="{x:.1f}" y="{_TOP - 4}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{x + 13:.1f}" y="{_TOP + 5}">{escape(name)}</text>'
        )
    return parts


def line_chart(
    categories: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    y_label: str,
    x_label: str = "",
    log_y: bool = False,
) -> str:
    """One line per series over the ``categories`` (x positions 0..K-1); None values are gaps.

    ``log_y``: the y axis in powers of ten (values <= 0 are left out).
    """
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    if log_y:
        values = [math.log10(v) for v in values if v > 0]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if log_y:
        low, high = math.floor(low), math.ceil(high)
        y_ticks = [float(v) for v in range(int(low), int(high) + 1)]
    else:
        y_ticks = nice_ticks(min(0.0, low), high)
    frame = _Frame((-0.5, len(categories) - 0.5), (y_ticks[0], y_ticks[-1]))
    step = max(1, math.ceil(len(categories) / 12))
    x_ticks = [(i, c) for i, c in enumerate(categories) if i % step == 0]
    parts = _open(title) + _axes(frame, x_ticks, [] if log_y else y_ticks, x_label, y_label)
    if log_y:  # tick labels as powers of ten
        for value in y_ticks:
            y = frame.y(value)
            parts.append(
                f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" y2="{y:.1f}" stroke="#ddd"/>'
                f'<text x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">1e{int(value)}</text>'
            )
    for i, (name, vs) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        points = []
        for k, v in enumerate(vs):
            if v is None or not math.isfinite(v) or (log_y and v <= 0):
                continue
            y = frame.y(math.log10(v) if log_y else v)
            points.append((frame.x(k), y))
            parts.append(
                f'<circle cx="{frame.x(k):.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                f"<title>{escape(name)}, {escape(categories[k])}: {v:.4g}</title></circle>"
            )
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
    parts += _legend(list(series))
    parts.append("</svg>")
    return "\n".join(parts)


def histogram(
    edges: Sequence[float] | np.ndarray,
    counts: dict[str, Sequence[float]] | dict[str, np.ndarray],
    *,
    title: str,
    x_label: str,
    y_label: str = "share of points (%)",
    markers: Sequence[tuple[float, str]] = (),
) -> str:
    """Histograms over the same bins (``edges``: K + 1 values), as outlined steps, each
    normalised to percent of its total; ``markers``: (x, label) vertical reference lines."""
    bins = np.asarray(edges, dtype=np.float64)
    shares = {}
    for name, c in counts.items():
        values = np.asarray(c, dtype=np.float64)
        shares[name] = 100 * values / max(values.sum(), 1.0)
    top = max((float(s.max()) for s in shares.values() if len(s)), default=1.0)
    y_ticks = nice_ticks(0.0, top)
    x_ticks_values = nice_ticks(float(bins[0]), float(bins[-1]))
    x_ticks_values = [v for v in x_ticks_values if bins[0] <= v <= bins[-1]]
    frame = _Frame((float(bins[0]), float(bins[-1])), (0.0, y_ticks[-1]))
    parts = _open(title) + _axes(
        frame, [(v, _label(v)) for v in x_ticks_values], y_ticks, x_label, y_label
    )
    for i, (name, share) in enumerate(shares.items()):
        colour = PALETTE[i % len(PALETTE)]
        path = [f"M{frame.x(bins[0]):.1f},{frame.y(0):.1f}"]
        for k, value in enumerate(share):
            path.append(f"L{frame.x(bins[k]):.1f},{frame.y(value):.1f}")
            path.append(f"L{frame.x(bins[k + 1]):.1f},{frame.y(value):.1f}")
        path.append(f"L{frame.x(bins[-1]):.1f},{frame.y(0):.1f}Z")
        parts.append(
            f'<path d="{"".join(path)}" fill="{colour}" fill-opacity="0.25" stroke="{colour}" '
            f'stroke-width="1.5"><title>{escape(name)}</title></path>'
        )
    for x_value, text in markers:
        if bins[0] <= x_value <= bins[-1]:
            x = frame.x(x_value)
            parts.append(
                f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{HEIGHT - _BOTTOM}" '
                f'stroke="#900" stroke-dasharray="4 3"/>'
                f'<text x="{x + 3:.1f}" y="{_TOP + 22}" fill="#900">{escape(text)}</text>'
            )
    parts += _legend(list(shares))
    parts.append("</svg>")
    return "\n".join(parts)


def histogram_of(
    values: dict[str, np.ndarray], *, bins: int = 40, upper_percentile: float = 99.5, **kwargs
) -> str:
    """:func:`histogram` of raw values (bins from 0, or the lowest value if negative, to the
    ``upper_percentile`` of all values; larger values fall in the last bin)."""
    everything = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values.values()])
    everything = everything[np.isfinite(everything)]
    if not len(everything):
        everything = np.zeros(1)
    low = min(0.0, float(everything.min()))
    high = float(np.percentile(everything, upper_percentile))
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    counts = {
        name: np.histogram(np.clip(v[np.isfinite(v)], low, high), bins=edges)[0]
        for name, v in values.items()
    }
    return histogram(edges, counts, **kwargs)
