"""The memory budget: what a file or a setting asks for is estimated before it is allocated.

Why: a 0.5 MB ``.nii.gz`` can inflate to 512 M voxels, a ``.npy`` header can declare 10^12
rows, ``output.grid_spacing = 0.001`` asks for petabytes. Allocating first and failing later
kills the process (or the machine); a clear refusal up front names what to change.

The budget is the config key ``memory_limit_gb`` (GiB); unset, it is
:data:`DEFAULT_FRACTION` of the machine's memory (the smaller of the physical memory, the
cgroup limit and ``RLIMIT_AS``). :func:`otreg.run` sets it for the run with
:func:`memory_limit`; readers and grid builders call :func:`check_memory`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError, InputError

#: the share of the machine's memory one run may ask for when ``memory_limit_gb`` is unset
DEFAULT_FRACTION = 0.5

_GIB = 1024**3
_limit: contextvars.ContextVar[int | None] = contextvars.ContextVar("otreg_memory", default=None)


def machine_memory() -> int:
    """Bytes this process may use at most: physical memory, cgroup limit, RLIMIT_AS."""
    sizes = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    with contextlib.suppress(ValueError, OSError):
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            sizes.append(int(text))
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            sizes.append(soft)
    return min(sizes) if sizes else 8 * _GIB


def budget() -> int:
    """The budget in bytes now (:func:`memory_limit`'s, else the default share)."""
    limit = _limit.get()
    return limit if limit is not None else int(DEFAULT_FRACTION * machine_memory())


@contextlib.contextmanager
def memory_limit(limit_gb: float | None) -> Iterator[None]:
    """Use ``limit_gb`` GiB as the budget inside the block (None: the default share)."""
    token = _limit.set(None if limit_gb is None else int(limit_gb * _GIB))
    try:
        yield
    finally:
        _limit.reset(token)


def gib(nbytes: float) -> str:
    """'12.0 GiB', '3.2 MiB' ..."""
    for unit, size in (("PiB", 1024**5), ("TiB", 1024**4), ("GiB", _GIB), ("MiB", 1024**2)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{nbytes / 1024:.1f} KiB"


def check_memory(
    nbytes: float, what: str, *, source: str | Path | None = None, key: str = ""
) -> None:
    """Refuse ``what`` if it would need more than the budget.

    Args:
        nbytes: the estimate, bytes.
        what: what would be allocated ("512 M voxels of float32 ...").
        source: the file it comes from (InputError naming it), else ``key``.
        key: the config key that asks for it (ConfigError naming it).
    """
    limit = budget()
    if nbytes <= limit:
        return
    problem = (
        f"{what} would need about {gib(nbytes)} of memory, more than the budget of "
        f"{gib(limit)} (memory_limit_gb; default {DEFAULT_FRACTION:.0%} of this machine's memory)"
    )
    if source is not None:
        raise InputError(source, problem)
    raise ConfigError(f"{key}: {problem}" if key else problem)


#: what one node of a grid costs while a field is evaluated and written on it (its coordinates,
#: the displacement, the inverse iterations' arrays, the NIfTI copy): an estimate, bytes
BYTES_PER_GRID_NODE = 400


def grid_nodes(points, spacing: float, margin: float) -> float:
    """Nodes of the grid of ``spacing`` mm over (N, 3) ``points`` plus ``margin`` mm around
    (as :func:`otreg.transforms.itk.grid_over` builds it), as a float (it may be huge)."""
    import numpy as np

    extent = np.ptp(np.asarray(points, dtype=np.float64), axis=0) + 2 * margin
    return float(np.prod(np.ceil(extent / spacing) + 1))


#: bytes per kept entry of the OT solver's truncated kernels (the points -> clusters kernel, its
#: transpose, the search's buffers), counted by :func:`kernel_entries_per_row`: the peak RSS of
#: a 300k-point tree's first round over its estimated entries, rounded up (benchmarks/README.md,
#: ``bench_pipeline.py --large 5``)
BYTES_PER_KERNEL_ENTRY = 60


def kernel_entries_per_row(
    points, others, blur: float, truncation: float, *, sample: int = 400, seed: int = 0
) -> float:
    """About how many entries each row of (N, 3) ``points`` keeps in the multiscale solver's
    kernel to the final-blur clusters of (M, 3) ``others`` (mm): the occupied cells of side
    0.75 ``blur`` (the clusters' side is in [blur / 2, blur)) within sqrt(2 truncation) blur
    (where the kernel falls below e^-truncation), averaged over ``sample`` random rows."""
    import numpy as np

    points = np.asarray(points, dtype=np.float64)
    others = np.asarray(others, dtype=np.float64)
    if not len(points) or not len(others):
        return 0.0
    side = 0.75 * blur
    radius = np.sqrt(2 * truncation) * blur
    lo = others.min(0)
    cells = np.floor((others - lo) / side).astype(np.int64)
    span = cells.max(0) + 1
    occupied = np.unique((cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2])
    reach = int(np.ceil(radius / side))
    offsets = np.stack(np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"), -1).reshape(
        -1, 3
    )
    offsets = offsets[np.linalg.norm(offsets, axis=1) * side <= radius]
    rng = np.random.default_rng(seed)
    sample = max(20, min(sample, 20_000_000 // len(offsets)))  # a large truncation: fewer rows
    rows = points[rng.choice(len(points), min(sample, len(points)), replace=False)]
    counts = []
    for row in np.floor((rows - lo) / side).astype(np.int64):
        near = row + offsets
        inside = ((near >= 0) & (near < span)).all(1)
        keys = (near[inside, 0] * span[1] + near[inside, 1]) * span[2] + near[inside, 2]
        at = np.searchsorted(occupied, keys).clip(max=len(occupied) - 1)
        counts.append(int((occupied[at] == keys).sum()))
    return float(np.mean(counts))
