"""SOPI engine: C-arm geometry, differentiable DRR projector, CT/X-ray I/O, spine segmentation.

Pure Python on torch, numpy, SimpleITK and scipy. Never imports Slicer, Qt or VTK.

Importing ``sopi`` before torch (as ``sopi`` and ``python -m sopi`` do) makes torch's OpenMP
threads wait briefly, then sleep (:func:`short_openmp_waits`), unless the environment already chose
a policy: on a CPU shared with other processes, OpenMP's default long spinning made registrations 3
to 8 times slower (docs/benchmarks.md, "Shared CPU"). ``OMP_NUM_THREADS`` sets torch's thread count
as usual.
"""

import os as _os
from collections.abc import MutableMapping as _MutableMapping

#: Busy-wait iterations of GNU OpenMP's threads (torch's Linux wheels) before they sleep at a barrier, about 10 us:
#: on an idle 2-core CPU whole registrations took 8-12 % less time than with none (sleeping at once), beside other
#: work 3-10 % more (OpenMP's own default, 300000, took 2-8 times longer there) (docs/benchmarks.md, "Short OpenMP waits").
OPENMP_SPIN_COUNT = 1000


def short_openmp_waits(environment: _MutableMapping[str, str]) -> None:
    """Unless ``environment`` chose an OpenMP wait policy: ``OMP_WAIT_POLICY=PASSIVE`` and (unless set)
    ``GOMP_SPINCOUNT`` = :data:`OPENMP_SPIN_COUNT`, so waiting threads spin briefly and then sleep. OpenMP reads
    them once, when torch loads it."""
    if "OMP_WAIT_POLICY" not in environment:
        environment["OMP_WAIT_POLICY"] = "PASSIVE"
        environment.setdefault("GOMP_SPINCOUNT", str(OPENMP_SPIN_COUNT))


short_openmp_waits(_os.environ)

__version__ = "0.1.0"


def register(*args, **kwargs):
    """Register an X-ray to a CT; see :func:`sopi.registration.register` (imported on first use)."""
    from .registration import register as _register

    return _register(*args, **kwargs)


def register_views(*args, **kwargs):
    """Register several X-rays of one patient (AP + lateral) at once; see :func:`sopi.registration.register_views`."""
    from .registration import register_views as _register_views

    return _register_views(*args, **kwargs)
