"""The solver's options: one frozen value passed down to every backend, built from the config.

Every field of :class:`otreg.config.SolverConfig` is here, with its default taken from the
schema (the one place where defaults live), plus two thresholds that choose between the dense
and multiscale code paths (tests lower them to reach the multiscale path on small problems).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from ..config import SolverConfig
from ..errors import SolverError

if TYPE_CHECKING:
    import torch

_SCHEMA = SolverConfig.model_validate({})


@dataclass(frozen=True)
class SolverOptions:
    """How one OT solve runs (lengths are not here: ``blur`` and ``reach`` are per solve).

    Attributes:
        backend: 'auto', 'torch' (dense blocks) or 'keops', for the dense (coarse or small)
            problems; 'auto' takes KeOps on CUDA, dense torch blocks on the CPU.
        scaling: ratio between successive blurs of the annealing (0 < scaling < 1).
        tol: stop iterating at the final blur when the source-marginal L1 error (relative) is
            below it.
        max_iter: at most this many iterations at the final blur, all stages together (on the
            multiscale path: the clusters, then the points); no other loop of the solver runs
            past it either.
        overrelaxation: omega in [1, 2) of the over-relaxed updates at the final blur
            (Thibault et al. 2017): f <- (1 - omega) f + omega softmin(g); every path uses it.
        dtype: 'float32' or 'float64': the inputs are converted to it; None keeps theirs.
        multiscale: solve large problems (N * M above ``dense_pairs``) coarse to fine on voxel
            clusters with truncated kernels (:mod:`otreg.ot.multiscale`); False solves every
            scale densely, O(N M) per iteration.
        truncation: the multiscale kernels keep, per row, the entries within exp(-truncation)
            of the row's largest one.
        dense_pairs: above this many point pairs (N * M), the multiscale solver replaces the
            dense one, and its cluster levels take truncated kernels.
        cluster_final_blur: where the points are denser than the final blur, solve it on
            clusters and match the points to them (:func:`otreg.ot.multiscale.to_points`).
    """

    backend: str = _SCHEMA.backend
    scaling: float = _SCHEMA.scaling
    tol: float = _SCHEMA.tol
    max_iter: int = _SCHEMA.max_iter
    overrelaxation: float = _SCHEMA.overrelaxation
    dtype: str | None = None
    multiscale: bool = _SCHEMA.multiscale
    truncation: float = _SCHEMA.truncation
    # with the compiled kernels, clouds of a few thousand points already solve far faster
    # multiscale than dense (benchmarks/README.md, design measurements); far smaller problems
    # are not worth the set-up
    dense_pairs: int = 250_000
    cluster_final_blur: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.backend not in ("auto", "torch", "keops"):
            problems.append(f"backend must be 'auto', 'torch' or 'keops', got {self.backend!r}")
        if not 0 < self.scaling < 1:
            problems.append(f"scaling must be in (0, 1), got {self.scaling}")
        if not self.tol > 0:
            problems.append(f"tol must be > 0, got {self.tol}")
        if self.max_iter < 1:
            problems.append(f"max_iter must be >= 1, got {self.max_iter}")
        if not 1 <= self.overrelaxation < 2:
            problems.append(f"overrelaxation must be in [1, 2), got {self.overrelaxation}")
        if self.dtype not in (None, "float32", "float64"):
            problems.append(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not self.truncation > 0:
            problems.append(f"truncation must be > 0, got {self.truncation}")
        if problems:
            raise SolverError("invalid solver options: " + "; ".join(problems))

    @classmethod
    def from_config(cls, config: SolverConfig, **extra) -> SolverOptions:
        """The options of a ``solver`` config section (``extra``: the fields it lacks)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in config.model_dump().items() if k in names}
        missing = set(config.model_dump()) - names
        assert not missing, f"SolverConfig fields without a solver option: {missing}"
        return cls(**values, **extra)

    def torch_dtype(self, default: torch.dtype) -> torch.dtype:
        """The dtype to solve in: ``dtype``'s, or ``default`` (the inputs') when None."""
        import torch

        return default if self.dtype is None else getattr(torch, self.dtype)
