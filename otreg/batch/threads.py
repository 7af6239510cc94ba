"""CPU threads that fit the allocation: how many a worker may use, and making every pool use them.

Two registrations that each start one thread per core on the same cores slow each other down
many times over (benchmarks/README.md): every batch worker therefore runs with the CPUs it was
given, split between the workers, for torch, otreg's native kernels (which follow torch's thread
count), OpenMP and BLAS alike, and with OpenMP threads that sleep rather than spin while they
wait.
"""

from __future__ import annotations

import os

# Environment variables that size the thread pools of the libraries under torch and numpy.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "OTREG_THREADS",
)


def available_cpus() -> list[int]:
    """The CPU ids this process may run on (its affinity mask; all CPUs where that is unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover  (macOS, Windows)
        return list(range(os.cpu_count() or 1))


def allocated_cpu_count() -> int:
    """How many CPUs this process was given: Slurm's ``SLURM_CPUS_PER_TASK`` when set (what the
    job asked for), else the affinity mask."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        return min(int(slurm), len(available_cpus()))
    return len(available_cpus())


def threads_per_worker(jobs: int, threads: int | None = None) -> int:
    """Threads of each of ``jobs`` workers: ``threads`` when given, else the allocation split
    evenly (at least 1)."""
    if threads:
        return max(1, int(threads))
    return max(1, allocated_cpu_count() // max(1, jobs))


def worker_cpus(slot: int, jobs: int, threads: int) -> list[int] | None:
    """The CPUs of worker ``slot`` (0-based) of ``jobs``: disjoint sets of ``threads`` CPUs
    when the allocation holds them all, else None (leave the scheduler to place the threads).

    None as well when the affinity mask is wider than the allocation (a Slurm without CPU
    binding: the other tasks on the node see the same mask and would pin to the same CPUs)."""
    cpus = available_cpus()
    if jobs * threads > len(cpus) or allocated_cpu_count() < len(cpus):
        return None
    return cpus[slot * threads : (slot + 1) * threads]


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that make a fresh process use ``threads`` threads everywhere,
    with OpenMP threads that sleep while they wait (no spinning on shared cores)."""
    env = {name: str(threads) for name in THREAD_VARIABLES}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["KMP_BLOCKTIME"] = "0"
    return env


def use_threads(threads: int, cpus: list[int] | None = None) -> None:
    """Make this process use ``threads`` threads (and only ``cpus`` when given): the environment
    for pools not yet started, torch's intra-op pool (which otreg's native kernels follow)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    os.environ.update(thread_environment(threads))
    import torch

    torch.set_num_threads(threads)


def current_threads() -> int:
    """The thread count otreg's kernels use in this process (torch's intra-op pool)."""
    import torch

    return torch.get_num_threads()
