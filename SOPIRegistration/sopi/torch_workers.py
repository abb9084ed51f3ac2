"""Many small torch operations side by side: one Python thread per CPU thread, each running torch single-threaded.

Torch spreads every operation over its intra-op (OpenMP) threads. For operations of a tenth of a millisecond, as in
the global search's FFT matching, the threads' wake-ups at every barrier cost as much as the work once they sleep
soon (``sopi.short_openmp_waits``, chosen so that a busy machine degrades gracefully): on the 2-core CPU the search's
maps of a chunk took 0.27-0.29 s with two threads, 0.34 s with one. Torch lets go of Python's lock inside its
operations, so independent pieces of such work run in Python threads side by side instead, each on one core with no
barrier (0.21 s; docs/benchmarks.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["side_by_side"]

_T = TypeVar("_T")
_R = TypeVar("_R")
#: One switch of torch's thread count at a time: calls from several threads wait for each other.
_SWITCH = threading.Lock()


def side_by_side(function: Callable[[_T], _R], items: Sequence[_T], device: torch.device | str = "cpu") -> list[_R]:
    """``[function(item) for item in items]``, the items spread over ``torch.get_num_threads()`` Python threads while
    torch runs each operation on one thread; torch's thread count is restored afterwards.

    Each call must only read what the others share. Sequential where there is one thread, one item, or ``device`` is not
    the CPU. The results are those of single-threaded torch, in the items' order."""
    threads = torch.get_num_threads()
    workers = min(threads, len(items))
    if workers <= 1 or torch.device(device).type != "cpu":
        return [function(item) for item in items]
    with _SWITCH:
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="sopi-torch") as pool:
                return list(pool.map(function, items))
        finally:
            torch.set_num_threads(threads)
