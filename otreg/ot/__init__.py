"""Optimal transport: the Sinkhorn solver behind every matching step.

``sinkhorn(x, y, a, b, blur=..., reach=...) -> OTSolution`` is the one entry point: dense for
small problems, multiscale with truncated kernels (``multiscale.py``) for large ones;
``OTSolution.bounds()`` certifies the exact OT cost (``certificate.py``).
"""

from .sinkhorn import OTSolution, blur_schedule, sinkhorn

__all__ = ["OTSolution", "blur_schedule", "sinkhorn"]
