"""Leave-one-case-out tuning of the ``lung_points`` preset on the DIR-LAB 4DCT development cases.

For every setting of a small grid over the preset's free parameters (the ridge fit's smoothness
weight ``smooth.regularization``, the kernel widths ``smooth.sigma`` scaled as a whole, the
blur and reach schedules ``match.blur`` / ``match.reach`` scaled as a whole) and every case of
DIR-LAB 1-5 (``../shared/data/dirlab4dct``, exhale -> inhale, 300 expert landmarks, read as
``bench_accuracy.py`` reads them), ``otreg.register`` runs once and its mean TRE, p95 and min
det J go to a JSON cache, keyed by the case, the resolved config (preset plus the setting's
overrides) and a fingerprint of otreg's registration code: a rerun only computes what changed.

It then prints, side by side:

- in-sample: the setting with the lowest mean TRE over the five cases, and that mean (what a
  preset tuned on all five claims);
- leave-one-out: for each case, the setting best on the other four, scored on that case; the
  mean over the five held-out scores (what the tuning can promise a new patient).

A preset whose leave-one-out figure is much worse than its in-sample one is over-fitted. The
preset as it is ships is one row of the grid (scales 1, its own regularization); ``--extra``
adds whole settings (e.g. ``--extra smooth.regularization='"auto"'``) that are scored the same
way. Several processes run at once only when the machine is idle (load average below one
per spare core); rows print as they end.

    python benchmarks/tune_loo.py [--cache runs/tune_loo.json] [--jobs N] [--fresh]
                                  [--regularization 0.1 0.3 1] [--sigma-scale 0.75 1 1.5]
                                  [--blur-scale 1] [--extra "k=v k=v" ...]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_accuracy import SPACING, Case  # noqa: E402  (the cases as bench_accuracy reads them)

CASES = [f"dirlab{c}" for c in SPACING]
PRESET = "lung_points"
DEFAULT_CACHE = ROOT / "runs" / "tune_loo.json"
#: settings scored beside the grid by default: the smoothness weight chosen from the data
DEFAULT_EXTRA = ['smooth.regularization="auto"']
#: the code a registration's TRE depends on (not the CLI, reports or batch runner)
CODE_PARTS = ("ot", "stages", "transforms", "native", "pipeline.py", "sampling.py")


def fingerprint() -> str:
    """A hash of otreg's registration code: cached rows from other code are not reused (the
    config is in the key itself)."""
    import otreg.config

    package = Path(otreg.config.__file__).parent
    digest = hashlib.sha256()
    for part in CODE_PARTS:
        path = package / part
        files = (
            sorted(path.rglob("*.py")) + sorted(path.rglob("*.cpp")) if path.is_dir() else [path]
        )
        for file in files:
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def grid_settings(args) -> dict[str, list[str]]:
    """{label: --set overrides} of the grid plus the --extra settings."""
    import otreg

    preset = otreg.load_config(PRESET)
    settings = {}
    for lam, s_scale, b_scale in itertools.product(
        args.regularization, args.sigma_scale, args.blur_scale
    ):
        overrides = [f"smooth.regularization={lam:g}"]
        if s_scale != 1:
            overrides.append(f"smooth.sigma={[round(s * s_scale, 3) for s in preset.smooth.sigma]}")
        if b_scale != 1:
            overrides.append(f"match.blur={[round(b * b_scale, 3) for b in preset.match.blur]}")
            overrides.append(
                f"match.reach={[round(r * b_scale, 3) for r in preset.match.reach or []]}"
            )
        settings[f"lambda {lam:g}, sigma x{s_scale:g}, blur/reach x{b_scale:g}"] = overrides
    for extra in args.extra:
        settings[extra] = extra.split()
    return settings


def score(case_name: str, overrides: list[str], threads: int) -> dict:
    """Register one case with the preset plus ``overrides``: mean / p95 TRE (mm), min det J."""
    import numpy as np
    import torch

    import otreg
    from otreg.metrics import target_registration_error

    torch.set_num_threads(threads)
    case = Case(case_name)
    case.load()
    result = otreg.register(case.source, case.target, otreg.load_config(PRESET, overrides))
    tre = target_registration_error(result.transform(case.lm_source), case.lm_target)
    chosen = [r.get("regularization") for r in result.metrics["rounds"] if "regularization" in r]
    return {
        "mean": float(tre.mean()),
        "p95": float(np.percentile(tre, 95)),
        "min_det_j": float(result.metrics["jacobian"]["min"]),
        "regularization_chosen": chosen,
    }


def load_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def save_cache(path: Path, cache: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    tmp.replace(path)


def key(case_name: str, overrides: list[str], code: str) -> str:
    """The cache key: the code, the case and the whole resolved config (the preset with the
    overrides), so that a setting that resolves to the same config is not run twice."""
    import otreg

    resolved = otreg.load_config(PRESET, overrides).to_toml()
    return f"{code} {case_name} {hashlib.sha256(resolved.encode()).hexdigest()[:16]}"


def loo_summary(table: dict[str, dict[str, dict]]) -> dict:
    """In-sample and leave-one-case-out figures of ``table[label][case] = row``."""
    import numpy as np

    labels = [label for label in table if all(c in table[label] for c in CASES)]
    mean = {label: np.mean([table[label][c]["mean"] for c in CASES]) for label in labels}
    best = min(labels, key=mean.get)
    folds = {}
    for held in CASES:
        others = [c for c in CASES if c != held]
        chosen = min(labels, key=lambda lab: np.mean([table[lab][c]["mean"] for c in others]))
        folds[held] = (chosen, table[chosen][held])
    return {
        "in_sample_setting": best,
        "in_sample": {c: table[best][c] for c in CASES},
        "in_sample_mean": float(mean[best]),
        "loo": folds,
        "loo_mean": float(np.mean([row["mean"] for _, row in folds.values()])),
        "means": mean,
    }


def cached_table(settings: dict[str, list[str]], cache_path: Path) -> dict[str, dict[str, dict]]:
    """``table[label][case]``: the rows of the cache for this code (missing ones left out)."""
    code, cache = fingerprint(), load_cache(cache_path)
    return {
        label: {c: cache[key(c, ov, code)] for c in CASES if key(c, ov, code) in cache}
        for label, ov in settings.items()
    }


def run_grid(
    settings: dict[str, list[str]],
    cache_path: Path,
    jobs: int,
    fresh: bool,
    threads: int,
    quiet: bool = False,
):
    """Fill the cache for every (case, setting); print each row as it ends (to stderr if
    ``quiet``). Returns the table."""
    import torch  # noqa: F401  (before forking: one import)

    out = sys.stderr if quiet else sys.stdout
    code = fingerprint()
    cache = {} if fresh else load_cache(cache_path)
    table: dict[str, dict[str, dict]] = {label: {} for label in settings}
    todo = []
    for label, overrides in settings.items():
        for case in CASES:
            k = key(case, overrides, code)
            if k in cache:
                table[label][case] = cache[k]
            else:
                todo.append((label, case, overrides, k))
    print(
        f"{len(settings)} settings x {len(CASES)} cases: {len(todo)} to run, "
        f"{len(settings) * len(CASES) - len(todo)} from {cache_path} (code {code}); "
        f"{jobs} process(es), {threads} thread(s) each, load average {os.getloadavg()[0]:.1f}",
        file=out,
        flush=True,
    )
    print("| setting | case | TRE mean mm | TRE p95 mm | min det J | lambda chosen |", file=out)
    print("|---|---|---|---|---|---|", file=out, flush=True)
    for label in settings:
        for case in CASES:
            if case in table[label]:
                print_row(label, case, table[label][case], cached=True, out=out)

    def finish(label, case, k, row):
        table[label][case] = row
        cache[k] = row
        save_cache(cache_path, cache)
        print_row(label, case, row, out=out)

    if jobs <= 1:
        for label, case, overrides, k in todo:
            finish(label, case, k, {**score(case, overrides, threads), "overrides": overrides})
    else:
        with ProcessPoolExecutor(jobs) as pool:
            futures = {
                pool.submit(score, case, overrides, threads): (label, case, k, overrides)
                for label, case, overrides, k in todo
            }
            for future in as_completed(futures):
                label, case, k, _ = futures[future]
                finish(label, case, k, {**future.result(), "overrides": futures[future][3]})
    return table


def print_row(label: str, case: str, row: dict, cached: bool = False, out=sys.stdout) -> None:
    chosen = ", ".join(f"{v:.3g}" for v in row.get("regularization_chosen") or []) or "-"
    print(
        f"| {label} | {case} | {row['mean']:.3f} | {row['p95']:.2f} | {row['min_det_j']:.3f} | "
        f"{chosen} |" + (" (cached)" if cached else ""),
        file=out,
        flush=True,
    )


def print_summary(summary: dict) -> None:
    """The in-sample and leave-one-out figures side by side, per case."""
    print()
    print(
        f"In-sample best: {summary['in_sample_setting']}: mean {summary['in_sample_mean']:.3f} mm"
    )
    print(f"Leave-one-case-out mean: {summary['loo_mean']:.3f} mm")
    print()
    print(
        "| case | in-sample TRE mm | LOO TRE mm | LOO min det J | setting chosen on the other four |"
    )
    print("|---|---|---|---|---|")
    for case in CASES:
        chosen, row = summary["loo"][case]
        print(
            f"| {case} | {summary['in_sample'][case]['mean']:.3f} | {row['mean']:.3f} | "
            f"{row['min_det_j']:.3f} | {chosen} |"
        )
    print(
        f"| **mean** | **{summary['in_sample_mean']:.3f}** | **{summary['loo_mean']:.3f}** | "
        f"{min(row['min_det_j'] for _, row in summary['loo'].values()):.3f} | |",
        flush=True,
    )


def default_jobs() -> int:
    """One process per core not busy already (load average), at least one."""
    cores = os.cpu_count() or 1
    return max(1, min(cores, int(cores - os.getloadavg()[0] + 0.5)))


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--jobs", type=int, default=None, help="processes (default: idle cores)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--fresh", action="store_true", help="ignore the cache (it is rewritten)")
    parser.add_argument("--regularization", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    parser.add_argument("--sigma-scale", type=float, nargs="+", default=[0.75, 1.0, 1.5])
    parser.add_argument("--blur-scale", type=float, nargs="+", default=[1.0])
    parser.add_argument(
        "--extra", nargs="*", default=DEFAULT_EXTRA, help="whole settings, each 'k=v k=v' (quoted)"
    )
    return parser


def default_arguments() -> argparse.Namespace:
    """The default grid's arguments (what bench_accuracy.py reads from the cache)."""
    return argument_parser().parse_args([])


def main() -> None:
    args = argument_parser().parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    missing = [p for c in CASES for p in Case(c).missing()]
    if missing:
        print(f"no data: {missing[0]} not found", file=sys.stderr)
        return
    jobs = args.jobs or default_jobs()
    table = run_grid(grid_settings(args), args.cache, jobs, args.fresh, args.threads)
    print_summary(loo_summary(table))


if __name__ == "__main__":
    main()
