"""SOPI engine: C-arm geometry, differentiable DRR projector, CT/X-ray I/O, spine segmentation.

Pure Python on torch, numpy, SimpleITK and scipy. Never imports Slicer, Qt or VTK.
"""

__version__ = "0.1.0"


def register(*args, **kwargs):
    """Register an X-ray to a CT; see :func:`sopi.registration.register` (imported on first use)."""
    from .registration import register as _register

    return _register(*args, **kwargs)
