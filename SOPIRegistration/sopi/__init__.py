"""SOPI engine: C-arm geometry, differentiable DRR projector, CT/X-ray I/O, spine segmentation.

Pure Python on torch, numpy, SimpleITK and scipy. Never imports Slicer, Qt or VTK.
"""

__version__ = "0.1.0"


def register(*args, **kwargs):
    """Register an X-ray to a CT; see :func:`sopi.registration.register` (imported on first use)."""
    from .registration import register as _register

    return _register(*args, **kwargs)


def register_views(*args, **kwargs):
    """Register several X-rays of one patient (AP + lateral) at once; see :func:`sopi.registration.register_views`."""
    from .registration import register_views as _register_views

    return _register_views(*args, **kwargs)
