"""pykeops, an optional GPU backend (``pip install 'otreg[gpu]'``).

On the CPU otreg needs it nowhere: the dense reductions are torch blocks and the large solves
use the compiled kernels of :mod:`otreg.native`. On a CUDA device the multiscale solver needs
it nowhere either (its truncated kernels are torch: :mod:`otreg.ot.device_kernels`);
``solver.backend = "auto"`` picks KeOps where every level is dense (``solver.multiscale =
false``) and for the ridge fits' Gaussian kernels, when it is installed (reductions that never
build an N x M block), else torch blocks on the GPU, with a warning.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

from .errors import ConfigError

log = logging.getLogger(__name__)

INSTALL = "pip install 'otreg[gpu]'"


@functools.cache
def keops_installed() -> bool:
    return importlib.util.find_spec("pykeops") is not None


def lazy_tensor():
    """pykeops' LazyTensor class; a ConfigError that says how to install it when missing."""
    try:
        from pykeops.torch import LazyTensor
    except ImportError as err:
        raise ConfigError(
            f"the keops backend needs pykeops, which is not installed ({err}): {INSTALL}, "
            'or set solver.backend = "torch"'
        ) from err
    return LazyTensor


@functools.cache
def warn_no_keops() -> None:
    log.warning(
        "pykeops is not installed: on the GPU otreg uses dense torch blocks instead of KeOps "
        "reductions (more memory); %s",
        INSTALL,
    )
