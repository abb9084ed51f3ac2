"""SOPI engine: C-arm geometry, differentiable DRR projector, CT/X-ray I/O, spine segmentation.

Pure Python on torch, numpy, SimpleITK and scipy. Never imports Slicer, Qt or VTK.

Importing ``sopi`` before torch (as ``sopi`` and ``python -m sopi`` do) makes torch's OpenMP
threads sleep rather than spin while they wait (``OMP_WAIT_POLICY=PASSIVE``, unless the
environment already chose a policy): on a CPU shared with other processes, spinning threads
made registrations 3 to 8 times slower (docs/benchmarks.md, "Shared CPU"). ``OMP_NUM_THREADS``
sets torch's thread count as usual.
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch loads OpenMP

__version__ = "0.1.0"


def register(*args, **kwargs):
    """Register an X-ray to a CT; see :func:`sopi.registration.register` (imported on first use)."""
    from .registration import register as _register

    return _register(*args, **kwargs)


def register_views(*args, **kwargs):
    """Register several X-rays of one patient (AP + lateral) at once; see :func:`sopi.registration.register_views`."""
    from .registration import register_views as _register_views

    return _register_views(*args, **kwargs)
