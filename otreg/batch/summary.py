"""The cohort at a glance: ``otreg batch status`` (progress) and ``otreg batch summary`` (results).

summary.csv / summary.json: one row per case (status, time, residuals, TRE when the case has
landmarks, Jacobian determinant and folding, transported mass, the error of a failed case);
index.html links each case's report and flags the outliers: failed cases, folding, a residual
or TRE above three times the cohort's median.
"""

from __future__ import annotations

import csv
import html
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

from ..io.atomic import write_text_atomic
from .status import DONE, FAILED, INTERRUPTED, PENDING, RUNNING, effective_state, read_status

COLUMNS = [
    "case",
    "status",
    "seconds",
    "residual_before_mm",
    "residual_after_mm",
    "tre_before_mm",
    "tre_after_mm",
    "tre_after_p95_mm",
    "min_det_j",
    "folding_fraction",
    "transported_mass",
    "suspect",
    "preset",
    "error",
    "outlier",
]
OUTLIER_FACTOR = 3.0


def case_folders(output: Path) -> list[str]:
    """Ids of the case folders under OUT (those with a status.json or a claim)."""
    if not output.is_dir():
        return []
    return sorted(
        p.name
        for p in output.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and ((p / "status.json").exists() or (p / ".claim").exists())
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def case_row(output: Path, case: str) -> dict[str, Any]:
    """The summary row of one case."""
    folder = output / case
    status = read_status(folder)
    row: dict[str, Any] = {name: None for name in COLUMNS}
    row.update(case=case, status=effective_state(status))
    if status is None:
        return row
    row["seconds"] = status.get("seconds")
    row["preset"] = status.get("preset")
    if row["status"] in (FAILED, INTERRUPTED) and status.get("error"):
        row["error"] = f"{status['error'].get('kind')}: {status['error'].get('message')}"
    if row["status"] != DONE:
        return row
    metrics = _json(folder / "metrics.json")
    row["residual_before_mm"] = metrics.get("residual_before", {}).get("mean_mm")
    row["residual_after_mm"] = metrics.get("residual_after", {}).get("mean_mm")
    row["transported_mass"] = metrics.get("transported_mass")
    flags = metrics.get("checks", {}).get("flags", [])
    row["suspect"] = "; ".join(flag["title"] for flag in flags) or None
    jacobian = metrics.get("jacobian") or {}
    row["min_det_j"] = jacobian.get("min")
    row["folding_fraction"] = jacobian.get("folding_fraction")
    evaluation = _json(folder / "evaluation.json")
    if evaluation:
        row["tre_before_mm"] = evaluation.get("before", {}).get("mean_mm")
        row["tre_after_mm"] = evaluation.get("after", {}).get("mean_mm")
        row["tre_after_p95_mm"] = evaluation.get("after", {}).get("p95_mm")
    return row


def summarize(output: str | Path, cases: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per case (``cases``: those of the manifest, pending ones included; None: the
    case folders found under OUT), outliers flagged."""
    output = Path(output)
    rows = [case_row(output, case) for case in (cases or case_folders(output))]
    medians = {}
    for key in ("residual_after_mm", "tre_after_mm"):
        values = [r[key] for r in rows if isinstance(r[key], (int, float))]
        medians[key] = statistics.median(values) if len(values) >= 3 else None
    for row in rows:
        reasons = []
        if row["status"] == FAILED:
            reasons.append("failed")
        if (row["folding_fraction"] or 0) > 0:
            reasons.append("folding")
        if row["suspect"]:
            reasons.append("suspect")
        for key, label in (("residual_after_mm", "residual"), ("tre_after_mm", "TRE")):
            median = medians[key]
            if median and row[key] is not None and row[key] > OUTLIER_FACTOR * median:
                reasons.append(f"{label} > {OUTLIER_FACTOR:g}x median")
        row["outlier"] = ", ".join(reasons) or None
    return rows


def write_summary(output: str | Path, cases: list[str] | None = None) -> list[dict[str, Any]]:
    """Write OUT/summary.csv, summary.json and index.html (atomically); return the rows."""
    output = Path(output)
    rows = summarize(output, cases)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    write_text_atomic(output / "summary.csv", text.getvalue())
    write_text_atomic(output / "summary.json", json.dumps(rows, indent=2) + "\n")
    write_text_atomic(output / "index.html", render_index(rows))
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def render_index(rows: list[dict[str, Any]]) -> str:
    """A self-contained HTML table of the cohort, outliers highlighted, reports linked."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for row in rows:
        cells = []
        for column in COLUMNS:
            value = _cell(row[column])
            if column == "case" and row["status"] == DONE:
                case = html.escape(row["case"], quote=True)
                value = f'<a href="{case}/report.html">{value}</a>'
            cells.append(f"<td>{value}</td>")
        css = ' class="outlier"' if row["outlier"] else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    counts = {
        s: sum(r["status"] == s for r in rows)
        for s in (DONE, FAILED, RUNNING, INTERRUPTED, PENDING)
    }
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>otreg batch summary</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "tr.outlier{background:#fdd}</style></head><body>"
        f"<h1>otreg batch summary</h1><p>{len(rows)} cases: "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + f" ({stamp}). Outliers (red): failed, folding, residual or TRE above "
        f"{OUTLIER_FACTOR:g} times the cohort's median.</p>"
        f"<table><tr>{head}</tr>{''.join(body)}</table></body></html>\n"
    )


def batch_status(output: str | Path, cases: list[str] | None = None) -> dict[str, Any]:
    """Where a batch stands: counts per state, the failed cases with their errors, the running
    ones (host, pid, since), the median time per case and an estimate of the time left
    (pending and running cases at the pace of the cases running now)."""
    output = Path(output)
    names = cases or case_folders(output)
    counts = {s: 0 for s in (DONE, FAILED, RUNNING, INTERRUPTED, PENDING)}
    failed, running, seconds = [], [], []
    now = time.time()
    for case in names:
        status = read_status(output / case)
        state = effective_state(status)
        counts[state] = counts.get(state, 0) + 1
        if state == DONE and isinstance((status or {}).get("seconds"), (int, float)):
            seconds.append(status["seconds"])  # type: ignore[index]
        elif state in (FAILED, INTERRUPTED) and status and status.get("error"):
            failed.append({"case": case, "state": state, **status["error"]})
        elif state == RUNNING and status:
            running.append(
                {
                    "case": case,
                    "host": status.get("host"),
                    "pid": status.get("pid"),
                    "running_s": round(now - float(status.get("started", now)), 1),
                }
            )
    per_case = statistics.median(seconds) if seconds else None
    left = counts[PENDING] + counts[INTERRUPTED] + counts[RUNNING]
    eta = per_case * left / max(1, len(running)) if per_case is not None else None
    return {
        "output": str(output),
        "cases": len(names),
        "counts": counts,
        "median_seconds_per_case": per_case,
        "estimated_seconds_left": round(eta, 1) if eta is not None else None,
        "failed": failed,
        "running": running,
    }
