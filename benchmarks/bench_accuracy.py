"""Registration accuracy (landmark TRE), otreg side by side with CPD and one-shot GeomLoss, in one run.

Cases: the five DIR-LAB 4DCT development cases (``../shared/data/dirlab4dct``: exhale feature
points -> inhale feature points, 300 expert landmark pairs each), the synthetic pair in
``sample_data/`` (exhale -> inhale vessels, 80 bifurcations) and a held-out synthetic pair
(``heldout``: ``sample_data/make_sample_data.py`` with seed 7 and 1.5x the breathing motion,
written to a temporary folder and deleted after; no preset was tuned on it). Each method registers exhale
(source, moving) onto inhale (fixed) from the two clouds alone; the landmarks are only used to
score it: TRE = |phi(exhale landmark) - inhale landmark| (mm), mean and 95th percentile.

Methods:
- ``otreg``: ``otreg.register`` with the input's preset (DIR-LAB: ``lung_points``, sample:
  ``lung_vessels``, what ``otreg register`` picks for them): ridge rounds, svf model.
- ``otreg-displacement``: the same with ``smooth.model=displacement`` (the last round's ridge
  regression is the displacement).
- ``otreg-gaussian``: the preset with every round's regression a Gaussian kernel average
  (``smooth.regression=gaussian``: no ridge rounds), displacement model: otreg before kernel
  ridge regression.
- ``cpd``: non-rigid Coherent Point Drift (pycpd; raw mm coordinates, no normalisation; at most
  100 EM iterations, pycpd's tolerance), clouds above 3,000 points down-sampled to 3,000
  (``otreg.sampling.downsample``) as CPD needs O(N M) memory and an O(M^3) solve per iteration.
  Best of an (alpha, beta) grid; beta (mm) is the motion kernel's width. Outlier weight w = 0:
  in development runs any w > 0 (0.01, 0.1) let sigma^2 collapse to ~0.01 mm^2 and roughly
  doubled the TRE (DIR-LAB 1: 1.12 -> 1.99 mm at w = 0.01, alpha 0.5, beta 40 mm). pycpd's
  M step multiplies diag(P1) @ G (O(M^3)); it is done here as the row scaling it is, same
  equations (CPD paper eq. 22). pycpd's ``transform_point_cloud(Y=...)`` adds G W
  with G the kernel among the FITTED points, so it is only right at those points; the map at
  landmarks and grid points is evaluated here as z + sum_m exp(-|z - y_m|^2 / 2 beta^2) W_m.
- ``geomloss``: one-shot RobOT-style baseline: the entropic OT plan between the clouds
  (``geomloss.SamplesLoss("sinkhorn", p=2, blur=b, scaling=0.9, debias=False)``, uniform weights,
  mm), barycentric targets T(x_i) = sum_j softmax_j((g_j - |x_i - y_j|^2 / 2) / b^2) y_j from
  the dual potential g, then a Gaussian-kernel (Nadaraya-Watson) average of the displacements
  T(x_i) - x_i of width sigma (``otreg.transforms.field.KernelField``). Best of a (blur, sigma)
  grid. GeomLoss's tensorized backend (a dense N x M cost matrix; no KeOps compilation), so
  clouds above 10,000 points are down-sampled to 10,000: the sample pair runs whole (one
  solve took 255 s on the project's loaded 2-core machine, 1 thread; down-sampled to 5,000 it
  took 63 s but its TRE went from 1.10 to 1.37 mm at blur 1, sigma 10 mm).

The peers get no rigid pre-alignment (the DIR-LAB clouds are already in one scanner frame; the
sample pair is too); otreg runs its presets as they are (rigid step included). The peers'
parameters are chosen by the lowest mean TRE averaged over the cases run, on these same
landmarks: an optimistic figure for them. min det J: the smallest Jacobian determinant of the
map on a grid over the source (the otreg preset's ``output.grid_spacing``, 4 mm; otreg's own
``metrics["jacobian"]["min"]``, the peers' by ``otreg.quality.jacobian_summary``). Runtime:
the registration (with the peers' down-sampling), not the Jacobian.

After the table, a summary of issue 16's figures side by side (otreg, CPD, GeomLoss, BCPD's
published figures): DIR-LAB per case and mean, the leave-one-case-out mean of
``benchmarks/tune_loo.py`` (read from its cache, or its grid run with ``--run-loo``), the
sample and held-out pairs, the LUNA16 lobe surfaces (``bench_surface.py``'s pairs, 12
subjects, ``lung_surface``) and the cip_chest label maps (an exactly rigid motion, default
``lung_mask``: error of the whole transform at every voxel, rotation error). ``--extras``
chooses which of the last three run.

    python benchmarks/bench_accuracy.py [--cases dirlab1 ... dirlab5 sample heldout] [--threads T]
                                        [--methods otreg otreg-displacement otreg-gaussian cpd
                                        geomloss]
                                        [--quick] [--extras loo surface cip] [--run-loo]
                                        [--surface-subjects 12]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DIRLAB = DATA / "dirlab4dct"
SPACING = {
    1: (0.97, 0.97, 2.5),
    2: (1.16, 1.16, 2.5),
    3: (1.15, 1.15, 2.5),
    4: (1.13, 1.13, 2.5),
    5: (1.10, 1.10, 2.5),
}
CASES = [f"dirlab{c}" for c in SPACING] + ["sample", "heldout"]
#: the held-out synthetic pair: make_sample_data.py with another seed and a larger breath,
#: written to a temporary folder, scored with the presets as they are (no tuning on it)
HELDOUT_SEED, HELDOUT_MOTION = 7, 1.5
#: BCPD's published mean TRE on DIR-LAB 1-5 (issue 16's bar: otreg better on every case)
BCPD = {"dirlab1": 1.07, "dirlab2": 1.06, "dirlab3": 1.34, "dirlab4": 1.81, "dirlab5": 1.92}
EXTRAS = ["loo", "surface", "cip"]
METHODS = ["otreg", "otreg-displacement", "otreg-gaussian", "cpd", "geomloss"]
#: --set overrides of the otreg methods
OTREG_SETTINGS = {
    "otreg": [],
    "otreg-displacement": ["smooth.model=displacement"],
    "otreg-gaussian": ["smooth.regression=gaussian", "smooth.model=displacement"],
}

CPD_POINTS = 3000
CPD_W = 0.0
CPD_GRID = [(alpha, beta) for alpha in (0.5, 2.0) for beta in (20.0, 40.0)]  # (alpha, beta mm)
CPD_QUICK = [(0.5, 40.0)]
GEOMLOSS_POINTS = 10_000
GEOMLOSS_GRID = [
    (blur, sigma) for blur in (1.0, 2.0) for sigma in (5.0, 10.0, 15.0)
]  # (blur mm, sigma mm)
GEOMLOSS_QUICK = [(1.0, 10.0)]


def fmt(values) -> str:
    """'{0.5, 2}': the distinct values of a grid axis."""
    return "{" + ", ".join(f"{v:g}" for v in sorted(set(values))) + "}"


class Case:
    """One exhale -> inhale pair: clouds, landmarks (mm) and the otreg preset for it."""

    def __init__(self, name: str, heldout_dir: Path | None = None):
        self.name = name
        if name in ("sample", "heldout"):
            folder = (
                ROOT / "sample_data" if name == "sample" else heldout_dir or Path("/nonexistent")
            )
            self.paths = (
                folder / "exhale_vessels.vtk",
                folder / "inhale_vessels.vtk",
                folder / "exhale_landmarks.txt",
                folder / "inhale_landmarks.txt",
            )
            self.preset, self.spacing = "lung_vessels", None
        else:
            n = int(name.removeprefix("dirlab"))
            self.paths = (
                DIRLAB / f"case{n}_exhale_points.vtk",
                DIRLAB / f"case{n}_inhale_points.vtk",
                DIRLAB / f"case{n}_300_T50_xyz.txt",
                DIRLAB / f"case{n}_300_T00_xyz.txt",
            )
            self.preset, self.spacing = "lung_points", SPACING[n]

    def missing(self) -> list[Path]:
        return [p for p in self.paths if not p.exists()]

    def load(self) -> None:
        import numpy as np

        import otreg
        from otreg.io import read_landmarks

        # DIR-LAB clouds carry no SPACE= tag; they are in the frame of their landmarks
        self.source, self.target = (otreg.load(p, mesh_frame="ras") for p in self.paths[:2])
        if self.spacing is None:
            self.lm_source, self.lm_target = np.loadtxt(self.paths[2]), np.loadtxt(self.paths[3])
        else:
            self.lm_source = read_landmarks(self.paths[2], "dirlab", self.spacing)
            self.lm_target = read_landmarks(self.paths[3], "dirlab", self.spacing)
        self.config = otreg.load_config(self.preset)

    def grid_points(self):
        """The source points otreg's Jacobian grid is laid over (its down-sampled source)."""
        from otreg.sampling import downsample

        return downsample(self.source, self.config.input.points, seed=self.config.seed).points


class PointMap:
    """x -> x + u(x) with the ``apply`` (mapped, confidence) interface of otreg's transforms."""

    def __init__(self, displacement):
        self.displacement = displacement

    def __call__(self, points):
        return points + self.displacement(points)

    def apply(self, points):
        import numpy as np

        return self(points), np.ones(len(points))


class CPDDisplacement:
    """u(z) = sum_m exp(-|z - y_m|^2 / (2 beta^2)) W_m: pycpd's deformable motion at ANY point."""

    def __init__(self, y, w, beta: float):
        self.y, self.w, self.beta = y, w, float(beta)

    def __call__(self, points):
        import torch

        center = self.y.mean(0)
        y = torch.as_tensor((self.y - center) / self.beta)
        w = torch.as_tensor(self.w)
        z = torch.as_tensor((points - center) / self.beta)
        out = torch.empty(len(z), 3, dtype=torch.float64)
        rows = max(1, 4_000_000 // len(y))
        for s in range(0, len(z), rows):
            out[s : s + rows] = torch.exp(-torch.cdist(z[s : s + rows], y).square() / 2) @ w
        return out.numpy()


def run_otreg(case: Case, settings: list[str]):
    """(TRE (L,), min det J, runtime s, 'src/tgt' registered points) of otreg's preset with
    the ``section.key=value`` ``settings``."""
    import otreg
    from otreg.metrics import target_registration_error

    cfg = otreg.load_config(case.preset, settings)
    result = otreg.register(case.source, case.target, cfg)
    times = result.metrics["times"]
    runtime = sum(v for k, v in times.items() if k != "quality_s")
    tre = target_registration_error(result.transform(case.lm_source), case.lm_target)
    points = result.metrics["points"]
    return tre, result.metrics["jacobian"]["min"], runtime, f"{points['source']}/{points['target']}"


def fit_cpd(case: Case, alpha: float, beta: float):
    """(map, runtime s, 'src/tgt' points) of non-rigid CPD on clouds of at most CPD_POINTS."""
    import numpy as np
    from pycpd import DeformableRegistration

    from otreg.sampling import downsample

    class Registration(DeformableRegistration):
        def update_transform(self):
            # pycpd 2.0's own M step (CPD paper eq. 22) with diag(P1) @ G, an O(M^3) product,
            # written as the row scaling it is; same A, B and solve
            a = self.P1[:, None] * self.G + self.alpha * self.sigma2 * np.eye(self.M)
            b = self.P @ self.X - self.P1[:, None] * self.Y
            self.W = np.linalg.solve(a, b)

    t0 = time.perf_counter()
    y = downsample(case.source, CPD_POINTS, seed=0).points.astype(np.float64)
    x = downsample(case.target, CPD_POINTS, seed=0).points.astype(np.float64)
    reg = Registration(X=x, Y=y, alpha=alpha, beta=beta, w=CPD_W)
    reg.register()
    print(
        f"cpd {case.name}: {reg.iteration} EM iterations, {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    _, w = reg.get_registration_parameters()
    return PointMap(CPDDisplacement(y, w, beta)), time.perf_counter() - t0, f"{len(y)}/{len(x)}"


def fit_geomloss(case: Case, blur: float, sigma: float):
    """(map, runtime s, 'src/tgt' points) of one GeomLoss plan + Nadaraya-Watson smoothing."""
    import numpy as np
    import torch
    from geomloss import SamplesLoss

    from otreg.sampling import downsample
    from otreg.transforms.field import KernelField

    t0 = time.perf_counter()
    src = downsample(case.source, GEOMLOSS_POINTS, seed=0).points.astype(np.float64)
    tgt = downsample(case.target, GEOMLOSS_POINTS, seed=0).points.astype(np.float64)
    center = tgt.mean(0)
    x = torch.as_tensor(src - center, dtype=torch.float32)
    y = torch.as_tensor(tgt - center, dtype=torch.float32)
    loss = SamplesLoss(
        "sinkhorn", p=2, blur=blur, scaling=0.9, potentials=True, debias=False, backend="tensorized"
    )
    _, g = loss(x, y)  # GeomLoss: cost |x - y|^2 / 2, eps = blur^2
    g = g.reshape(-1)
    moved = torch.empty_like(x)
    rows = max(1, 4_000_000 // len(y))
    for s in range(0, len(x), rows):
        logits = (g[None, :] - torch.cdist(x[s : s + rows], y).square() / 2) / blur**2
        moved[s : s + rows] = torch.softmax(logits, dim=1) @ y
    displacement = (moved - x).double().numpy()
    field = KernelField(src, displacement, np.ones(len(src)), sigma)
    return PointMap(field), time.perf_counter() - t0, f"{len(src)}/{len(tgt)}"


def row(case: Case, method: str, points: str, tre, jac_min: float, runtime: float) -> str:
    import numpy as np

    from otreg.metrics import target_registration_error

    before = target_registration_error(case.lm_source, case.lm_target).mean()
    return (
        f"| {case.name} | {method} | {points} | {before:.2f} | {tre.mean():.2f} | "
        f"{np.percentile(tre, 95):.2f} | {jac_min:.3f} | {runtime:.1f} |"
    )


def avg_row(method: str, results: dict) -> str | None:
    """The DIR-LAB average of the per-case mean (and p95) TRE, worst det J, summed runtime
    (None below two DIR-LAB cases)."""
    import numpy as np

    dirlab = {name: r for name, r in results.items() if name.startswith("dirlab")}
    if len(dirlab) < 2:
        return None
    label = "dirlab avg" + (
        "" if len(dirlab) == 5 else f" ({', '.join(n.removeprefix('dirlab') for n in dirlab)})"
    )
    tres = [r[0] for r in dirlab.values()]
    return (
        f"| **{label}** | {method} | | | **{np.mean([t.mean() for t in tres]):.2f}** | "
        f"{np.mean([np.percentile(t, 95) for t in tres]):.2f} | "
        f"{min(r[1] for r in dirlab.values()):.3f} | {sum(r[2] for r in dirlab.values()):.1f} |"
    )


def run_peer(method: str, cases: list[Case], grid, fit, names: tuple[str, str]):
    """Fit every grid setting on every case; return the best setting's label and per-case results."""
    import numpy as np

    from otreg.metrics import target_registration_error
    from otreg.quality import jacobian_summary

    fits, scores = {}, {}
    for setting in grid:
        try:
            for case in cases:
                fits[setting, case.name] = fit(case, *setting)
        except Exception as error:
            print(
                f"{method} {setting} failed on {case.name}: {error!r}", file=sys.stderr, flush=True
            )
            scores[setting] = np.inf
            continue
        score = np.mean(
            [
                target_registration_error(fits[setting, c.name][0](c.lm_source), c.lm_target).mean()
                for c in cases
            ]
        )
        print(
            f"{method} {names[0]}={setting[0]:g} {names[1]}={setting[1]:g} mm: mean TRE {score:.3f} mm "
            "over the cases run",
            file=sys.stderr,
            flush=True,
        )
        scores[setting] = score
    best = min(grid, key=scores.get)
    if not np.isfinite(scores[best]):
        return method, {}
    label = f"{method} ({names[0]} {best[0]:g}, {names[1]} {best[1]:g} mm)"
    results = {}
    for case in cases:
        transform, runtime, points = fits[best, case.name]
        tre = target_registration_error(transform(case.lm_source), case.lm_target)
        jac = jacobian_summary(transform, case.grid_points(), case.config.output.grid_spacing)[
            "min"
        ]
        results[case.name] = (tre, jac, runtime, points)
    return label, results


def make_heldout(folder: Path) -> None:
    """The held-out synthetic pair in ``folder`` (make_sample_data.py, HELDOUT_SEED and
    HELDOUT_MOTION: a tree and breath no preset was tuned on)."""
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "sample_data" / "make_sample_data.py"),
            "--seed",
            str(HELDOUT_SEED),
            "--motion-scale",
            str(HELDOUT_MOTION),
            "--out",
            str(folder),
        ],
        check=True,
        stdout=sys.stderr,
    )


def loo_figures(run: bool) -> dict | None:
    """tune_loo.py's in-sample and leave-one-out summary of its default grid (from its cache;
    ``run``: computing the rows it lacks), or None when the cache lacks rows."""
    import tune_loo

    parser_defaults = tune_loo.default_arguments()
    settings = tune_loo.grid_settings(parser_defaults)
    if run:
        table = tune_loo.run_grid(
            settings, tune_loo.DEFAULT_CACHE, tune_loo.default_jobs(), False, 1, quiet=True
        )
    else:
        table = tune_loo.cached_table(settings, tune_loo.DEFAULT_CACHE)
    if any(len(rows) < len(tune_loo.CASES) for rows in table.values()):
        return None
    return tune_loo.loo_summary(table)


def cip_figures() -> dict | None:
    """Default lung_mask registration of the cip_chest label maps (an exactly rigid motion):
    mean and max error of the whole transform against the known matrix at every voxel (mm),
    the rigid step's rotation error (degrees); None when the data is absent."""
    import numpy as np

    import otreg
    from otreg.transforms.rigid import apply_matrix, matrix_difference

    folder = DATA / "cip_chest"
    paths = [folder / f for f in ("lunglabels_moving.nii.gz", "lunglabels_fixed.nii.gz")]
    if not all(p.exists() for p in paths):
        return None
    moving, fixed = (otreg.load(p) for p in paths)
    truth = np.loadtxt(folder / "expected_moving_to_fixed_ras.txt")
    started = time.perf_counter()
    result = otreg.register(
        moving, fixed, otreg.load_config("lung_mask", ["output.jacobian=false"])
    )
    runtime = time.perf_counter() - started
    error = np.linalg.norm(
        result.transform(moving.points) - apply_matrix(truth, moving.points), axis=1
    )
    degrees, _ = matrix_difference(result.transform.rigid, truth)
    return {"mean": error.mean(), "max": error.max(), "degrees": degrees, "runtime": runtime}


def print_summary(by_method: dict[str, tuple[str, dict]], args) -> None:
    """Issue 16's figures in one table: DIR-LAB per case and mean (in-sample; leave-one-out
    from tune_loo), the sample and held-out synthetic pairs, LUNA16 lobes, cip_chest; the
    peers beside otreg where they ran."""
    import numpy as np

    print()
    print("Issue 16 figures (bars in brackets)")
    methods = [m for m in ("otreg", "cpd", "geomloss") if m in by_method]
    labels = [by_method[m][0] for m in methods]
    print("| figure | " + " | ".join(labels) + " | BCPD (published) |")
    print("|---|" + "---|" * (len(methods) + 1))

    def cell(method, name, pick):
        results = by_method[method][1]
        return pick(results[name]) if name in results else "-"

    def tre(r):
        return f"{r[0].mean():.2f} (p95 {np.percentile(r[0], 95):.2f}, det J {r[1]:.2f})"

    for name in [c for c in CASES if c.startswith("dirlab")]:
        row = [cell(m, name, tre) for m in methods]
        print(f"| {name} mean TRE mm (< BCPD) | " + " | ".join(row) + f" | {BCPD[name]:.2f} |")
    dirlab_means = {}
    for m in methods:
        results = by_method[m][1]
        names = [n for n in results if n.startswith("dirlab")]
        if len(names) == 5:
            dirlab_means[m] = np.mean([results[n][0].mean() for n in names])
    if dirlab_means:
        row = [f"{dirlab_means[m]:.3f}" if m in dirlab_means else "-" for m in methods]
        print(
            "| DIR-LAB 1-5 mean TRE mm, in-sample (<= 1.15) | "
            + " | ".join(row)
            + f" | {np.mean(list(BCPD.values())):.2f} |"
        )
    if "loo" in args.extras:
        loo = loo_figures(args.run_loo)
        text = (
            f"{loo['loo_mean']:.3f} (grid's in-sample best {loo['in_sample_mean']:.3f}: "
            f"{loo['in_sample_setting']})"
            if loo
            else "not in tune_loo.py's cache for this code: run benchmarks/tune_loo.py "
            "(or this script with --run-loo)"
        )
        print(
            "| DIR-LAB 1-5 mean TRE mm, leave-one-case-out over tune_loo's grid (<= 1.20) | "
            + text
            + " |" * len(methods)
        )
    for name, bar in (("sample", " (<= 0.35, p95 <= 1.0)"), ("heldout", "")):
        label = (
            "sample pair"
            if name == "sample"
            else f"held-out synthetic (seed {HELDOUT_SEED}, motion x{HELDOUT_MOTION:g})"
        )
        row = [cell(m, name, tre) for m in methods]
        print(f"| {label} mean TRE mm{bar} | " + " | ".join(row) + " | |")
    if "surface" in args.extras and "otreg" in args.methods:
        from bench_surface import run_subjects, subject_files

        import otreg

        files = subject_files(args.surface_subjects)
        if files:
            print(f"(LUNA16 lobes, lung_surface preset, {len(files)} subjects:)", file=sys.stderr)
            means = run_subjects(
                files,
                otreg.load_config("lung_surface"),
                emit=lambda line: print(line, file=sys.stderr, flush=True),
            )
            print(
                f"| LUNA16 lobe surfaces, {len(means)} subjects: mean / worst mm (<= 1.8 / 3) | "
                f"{np.mean(means):.2f} / {np.max(means):.2f} ({sum(m > 3 for m in means)} above 3 mm)"
                + " | -" * (len(methods) - 1)
                + " | |",
                flush=True,
            )
    if "cip" in args.extras and "otreg" in args.methods:
        cip = cip_figures()
        if cip:
            print(
                "| cip_chest label maps (rigid motion), default lung_mask: mean error mm (<= 0.1), "
                f"rotation deg (<= 0.02) | {cip['mean']:.3f} (max {cip['max']:.3f}), "
                f"{cip['degrees']:.4f} deg" + " | -" * (len(methods) - 1) + " | |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()),
        help="torch/OpenMP/BLAS threads (default: $OMP_NUM_THREADS, else all cores)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a single parameter setting for each peer"
    )
    parser.add_argument(
        "--extras",
        nargs="*",
        default=EXTRAS,
        choices=EXTRAS,
        help="issue 16's other figures in the closing summary: loo (tune_loo.py's cache, or "
        "its grid run now with --run-loo), surface (LUNA16 lobes, bench_surface.py), cip "
        "(cip_chest label maps, rigid motion); none: --extras with no value",
    )
    parser.add_argument(
        "--run-loo",
        action="store_true",
        help="run tune_loo.py's default grid where its cache lacks rows (about 15 min idle)",
    )
    parser.add_argument(
        "--surface-subjects", type=int, default=12, help="LUNA16 subjects of the summary"
    )
    args = parser.parse_args()
    # numpy's BLAS (CPD) reads these when it loads: set them before the first numpy import
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    try:  # KeOps prints its set-up warnings on stdout: let them go to stderr, before the table
        with contextlib.redirect_stdout(sys.stderr):
            import pykeops  # noqa: F401
    except ImportError:
        pass

    heldout_dir = None
    if "heldout" in args.cases:
        heldout_dir = Path(tempfile.mkdtemp(prefix="otreg_heldout_"))
        make_heldout(heldout_dir)
    cases = []
    for name in args.cases:
        case = Case(name, heldout_dir)
        if missing := case.missing():
            print(f"skip {name}: {missing[0]} not found", file=sys.stderr)
            continue
        case.load()
        cases.append(case)
    if not cases:
        print("no case to run: data absent", file=sys.stderr)
        return
    cpd_grid, gl_grid = (CPD_QUICK, GEOMLOSS_QUICK) if args.quick else (CPD_GRID, GEOMLOSS_GRID)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"Registration accuracy, exhale -> inhale: {platform.machine()} {os.cpu_count()} cores, "
        f"{args.threads} thread(s), load average {os.getloadavg()[0]:.1f}, device {device}, "
        f"torch {torch.__version__}. "
        f"CPD (pycpd, w {CPD_W:g}, clouds > {CPD_POINTS:,} points down-sampled to {CPD_POINTS:,}): best of "
        f"alpha {fmt(a for a, _ in cpd_grid)} x beta {fmt(b for _, b in cpd_grid)} mm; "
        f"GeomLoss one-shot plan + Gaussian smoothing (clouds > {GEOMLOSS_POINTS:,} points down-sampled to "
        f"{GEOMLOSS_POINTS:,}): best of blur {fmt(b for b, _ in gl_grid)} x "
        f"sigma {fmt(s for _, s in gl_grid)} mm; peers chosen by mean TRE over the cases run "
        f"(on these landmarks), no rigid step for the peers. min det J on a "
        f"{cases[0].config.output.grid_spacing:g} mm grid over the source."
    )
    print(
        "| case | method | points (src/tgt) | TRE before mm | TRE mean mm | TRE p95 mm | min det J | runtime s |"
    )
    print("|---|---|---|---|---|---|---|---|", flush=True)
    # One method at a time, its rows as its cases end (a peer's only after its whole grid).
    by_method: dict[str, tuple[str, dict]] = {}
    for method in args.methods:
        if method.startswith("otreg"):
            label, results = method, {}
            for case in cases:
                try:
                    results[case.name] = run_otreg(case, OTREG_SETTINGS[method])
                except Exception as error:
                    print(f"{method} failed on {case.name}: {error!r}", file=sys.stderr, flush=True)
                    continue
                tre, jac, runtime, points = results[case.name]
                print(row(case, label, points, tre, jac, runtime), flush=True)
        else:
            if method == "cpd":
                label, results = run_peer("cpd", cases, cpd_grid, fit_cpd, ("alpha", "beta"))
            else:
                label, results = run_peer(
                    "geomloss", cases, gl_grid, fit_geomloss, ("blur", "sigma")
                )
            for case in cases:
                if case.name in results:
                    tre, jac, runtime, points = results[case.name]
                    print(row(case, label, points, tre, jac, runtime), flush=True)
        if (line := avg_row(label, results)) is not None:
            print(line, flush=True)
        by_method[method] = (label, results)
    if heldout_dir is not None:
        shutil.rmtree(heldout_dir, ignore_errors=True)
    print_summary(by_method, args)


if __name__ == "__main__":
    main()
