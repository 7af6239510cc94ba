"""Optimal transport: the Sinkhorn solver behind every matching step.

``sinkhorn(x, y, a, b, blur=..., reach=...) -> OTSolution`` is the one entry point; the
multiscale solver will sit behind the same interface.
"""

from .sinkhorn import OTSolution, blur_schedule, sinkhorn

__all__ = ["OTSolution", "blur_schedule", "sinkhorn"]
