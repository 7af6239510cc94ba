"""Speed of otreg's compiled kernels per build: portable flags, other -march levels, the old
run-time (ctypes, -march=native) build.

Each build is made in a copy of the repository in a temporary folder: the current tree built
by ``setup.py build_ext --inplace`` with ``OTREG_ARCH_FLAGS=-march=LEVEL`` for each ``--march``
LEVEL ("default" leaves it unset: the portable default of setup.py), and, with ``--old-rev``, the
tree of that commit (the kernels compiled at first use through ctypes with -march=native;
the first use is outside the timing). Every build then runs the same work in its own process
(the "kernels" column says which ran: "torch" means that a build failed):

- solve: a multiscale Sinkhorn solve (``otreg.ot.sinkhorn``, blur 1 % of the cube) between
  two uniform clouds of ``--points`` points, the truncated kernels' search and the solver's
  sparse products;
- average: the smoothing fields' Gaussian average (``gaussian_average``) of ``--points``
  queries over ``--points // 10`` controls;
- nearest: nearest-neighbour distances (``otreg.metrics.nearest_distances``, the compiled
  c-transform) between the two clouds.

The median of ``--repeats`` calls after one untimed call, on ``--threads`` threads. Run it on
an idle machine (on a shared one the figures mean nothing):

    python benchmarks/bench_builds.py                                # default, v3, native
    python benchmarks/bench_builds.py --old-rev 48c366d --points 100000
    python benchmarks/bench_builds.py --march default x86-64-v4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ["solve", "average", "nearest"]


def child(points: int, repeats: int) -> None:
    """The timed work, in the process of one build (its tree first on sys.path)."""
    import torch

    from otreg.metrics import nearest_distances
    from otreg.ot import sinkhorn

    try:
        from otreg import native
        from otreg.native.gaussian_average import gaussian_average

        kernels = native.info()["backend"]
    except ImportError:  # the old tree: the solver's modules, compiled at first use
        from otreg.ot.gaussian_average import gaussian_average  # type: ignore[no-redef]

        from otreg.ot import _native  # type: ignore[attr-defined]

        kernels = "native" if _native.library() is not None else "torch"

    g = torch.Generator().manual_seed(0)
    x = torch.rand(points, 3, generator=g) * 100
    y = torch.rand(points, 3, generator=g) * 100 + 3
    controls = points // 10
    values = torch.randn(controls, 3, generator=g)
    log_w = torch.zeros(controls)
    work = {
        "solve": lambda: sinkhorn(x, y, blur=1.0),
        "average": lambda: gaussian_average(x, y[:controls], log_w, values, 5.0),
        "nearest": lambda: nearest_distances(x.double().numpy(), y.double().numpy()),
    }
    result: dict[str, float | str] = {"kernels": kernels}
    for name, call in work.items():
        call()  # the first call: page faults, the old build's compilation
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        result[name] = statistics.median(times)
    print(json.dumps(result))


def copy_tree(dest: Path, rev: str | None) -> None:
    """The repository's tracked and untracked-unignored files (``rev`` None), ``rev``'s, or
    (``rev`` a folder) that folder's."""
    if rev is not None and Path(rev).is_dir():
        shutil.copytree(rev, dest, dirs_exist_ok=True)
        return
    if rev is not None:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def build(tree: Path, march: str) -> str:
    """Build the extension in ``tree`` with -march=``march`` ("default": setup.py's flags);
    returns the flags the module records."""
    env = dict(os.environ)
    env.pop("OTREG_ARCH_FLAGS", None)
    if march != "default":
        env["OTREG_ARCH_FLAGS"] = f"-march={march}"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
    )
    code = "from otreg import native; print(native.info().get('build_flags'))"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def measure(tree: Path, args: argparse.Namespace, cache: Path) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "OMP_NUM_THREADS": str(args.threads),
        "OTREG_CACHE_DIR": str(cache),  # the old build's run-time cache, fresh
    }
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(args.points),
         str(args.repeats)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )  # fmt: skip
    if out.returncode:
        print(out.stderr[-2000:], file=sys.stderr)
        return {"kernels": "failed", **{name: float("nan") for name in WORK}}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument(
        "--march",
        nargs="+",
        default=["default", "x86-64-v3", "native"],
        help='-march level of each build ("default": the portable flags of setup.py)',
    )
    parser.add_argument(
        "--old-rev",
        help="also time the run-time (ctypes) build of this commit (e.g. the last one before "
        "the kernels became an extension: 48c366d), or of a folder holding its tree (where "
        "there is no git, e.g. `git archive 48c366d otreg | tar -x -C old/`)",
    )
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), int(args.child[1]))
        return
    print(
        f"otreg's kernels per build, {args.points} points, {args.threads} thread(s), "
        f"load average {os.getloadavg()[0]:.1f}; median s of {args.repeats} calls"
    )
    print("| build | flags | kernels | " + " | ".join(f"{w} s" for w in WORK) + " |")
    print("|---|---|---|" + "---|" * len(WORK), flush=True)
    builds = [(f"extension {march}", march, None) for march in args.march]
    if args.old_rev:
        builds.append((f"ctypes at {args.old_rev}", None, args.old_rev))
    for label, march, rev in builds:
        with tempfile.TemporaryDirectory() as tmp:
            tree, cache = Path(tmp) / "tree", Path(tmp) / "cache"
            tree.mkdir()
            copy_tree(tree, rev)
            recorded = build(tree, march) if march is not None else "-O3 -march=native (run time)"
            times = measure(tree, args, cache)
        print(
            f"| {label} | {recorded} | {times['kernels']} | "
            + " | ".join(f"{times[w]:.3f}" for w in WORK)
            + " |",
            flush=True,
        )


if __name__ == "__main__":
    main()
