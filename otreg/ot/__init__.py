"""Optimal transport: the Sinkhorn solver behind every matching step.

``sinkhorn(x, y, a, b, blur=..., reach=..., options=SolverOptions(...)) -> OTSolution`` is the
one entry point (``sinkhorn.py``). It hands the problem to one of two backends, dense
(``dense.py``) for small problems and multiscale with truncated kernels (``multiscale.py``,
``sparse.py``) for large ones, which share the leaf modules: ``options.py`` (the options, from
the config), ``iterate.py`` (the updates and the loop), ``kernels.py`` (the :class:`Kernel`
protocol and the dense kernels) and ``solution.py`` (the result). The truncated kernels are
built by the compiled CPU kernels of :mod:`otreg.native` (which also serve the smoothing
fields); ``OTSolution.bounds()`` certifies the exact OT cost
(``certificate.py``); ``sinkhorn_divergence`` removes the entropic bias (``divergence.py``).
Inside this package the regularisation is ``eps`` (mm^2); ``blur`` (mm, eps = blur^2) is
converted once, by ``sinkhorn``.
"""

from .divergence import sinkhorn_divergence
from .iterate import blur_schedule
from .kernels import Kernel
from .options import SolverOptions
from .sinkhorn import sinkhorn
from .solution import OTSolution, Plan

__all__ = [
    "Kernel",
    "OTSolution",
    "Plan",
    "SolverOptions",
    "blur_schedule",
    "sinkhorn",
    "sinkhorn_divergence",
]
