"""Optimal transport: the Sinkhorn solver behind every matching step.

``sinkhorn(x, y, a, b, blur=..., reach=...) -> OTSolution`` is the one entry point: dense for
small problems, multiscale with truncated kernels (``multiscale.py``, ``sparse.py``) for large
ones, built by the compiled CPU kernels of :mod:`otreg.native` (which also serve the smoothing
fields); ``OTSolution.bounds()`` certifies the exact OT cost
(``certificate.py``); ``sinkhorn_divergence`` removes the entropic bias (``divergence.py``).
"""

from .divergence import sinkhorn_divergence
from .sinkhorn import OTSolution, blur_schedule, sinkhorn

__all__ = ["OTSolution", "blur_schedule", "sinkhorn", "sinkhorn_divergence"]
