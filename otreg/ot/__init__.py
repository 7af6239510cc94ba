"""Optimal transport: the Sinkhorn solver behind every matching step.

``sinkhorn(x, y, a, b, blur=..., reach=...) -> OTSolution`` is the one entry point: dense for
small problems, multiscale with truncated kernels (``multiscale.py``, ``sparse.py``) for large
ones, built by compiled CPU kernels (``_native.py``, ``_native.cpp``) that also serve the
smoothing fields (``gaussian_average.py``); ``OTSolution.bounds()`` certifies the exact OT cost
(``certificate.py``); ``sinkhorn_divergence`` removes the entropic bias (``divergence.py``).
"""

from .divergence import sinkhorn_divergence
from .sinkhorn import OTSolution, blur_schedule, sinkhorn

__all__ = ["OTSolution", "blur_schedule", "sinkhorn", "sinkhorn_divergence"]
