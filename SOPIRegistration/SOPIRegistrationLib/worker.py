"""Background jobs on one persistent engine thread; every callback on the thread that polls.

MRML and VTK are not thread-safe, so the engine thread only runs engine code on arrays
prepared beforehand. Progress, the result and errors are queued; :meth:`BackgroundJob.poll`
(called from Slicer's main thread by a timer, or by :meth:`BackgroundJob.wait`) delivers
them, so ``on_done`` may write MRML nodes safely.

All torch work runs on that one thread (:func:`on_engine_thread` for short blocking calls
too): torch's OpenMP workers spin for a while after each parallel region, so a second thread
running torch competes with them for the cores (a registration measured 10 to 25 % slower on
the main thread once a worker thread had run torch, on 2 cores; benchmarks/engine_thread.py).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

from sopi.errors import Cancelled

__all__ = ["BackgroundJob", "on_engine_thread"]

ProgressCallback = Callable[[float, str], None]
_ENGINE_THREAD_NAME = "SOPIRegistration-engine"
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _engine_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_ENGINE_THREAD_NAME)
        return _executor


def on_engine_thread(function: Callable[..., Any], *args, **kwargs) -> Any:
    """Run ``function`` on the engine thread and wait for it (directly when already there)."""
    if threading.current_thread().name.startswith(_ENGINE_THREAD_NAME):
        return function(*args, **kwargs)
    return _engine_executor().submit(function, *args, **kwargs).result()


class BackgroundJob:
    """Runs ``work(progress, cancel)`` on the engine thread (jobs queue behind each other).

    Args:
        work: the computation; it calls ``progress(fraction, message)`` and polls
            ``cancel()`` (True once :meth:`cancel` was called); it may raise
            :class:`sopi.errors.Cancelled`.
        on_progress: ``(fraction, message)``, delivered by :meth:`poll`.
        on_done: called with ``finish(result)`` (or the result itself) by :meth:`poll`.
        on_error: called with the exception (a :class:`Cancelled` after a cancel).
        finish: runs on the polling thread before ``on_done`` and turns the worker's
            result into the job's (for example, writes MRML nodes); its errors go to ``on_error``.
    """

    def __init__(
        self,
        work: Callable[[ProgressCallback, Callable[[], bool]], Any],
        on_progress: ProgressCallback | None = None,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        finish: Callable[[Any], Any] | None = None,
        name: str = "SOPIRegistration",
    ) -> None:
        self._work, self._finish = work, finish
        self._on_progress, self._on_done, self._on_error = on_progress, on_done, on_error
        self._events: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._name = name
        self._future: Future | None = None
        self._finished = False
        self.result: Any = None
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        def progress(fraction: float, message: str) -> None:
            self._events.put(("progress", (float(fraction), str(message))))

        try:
            outcome = self._work(progress, self._cancel.is_set)
            if self._cancel.is_set():
                raise Cancelled("cancelled")
            self._events.put(("done", outcome))
        except BaseException as error:  # noqa: BLE001 - delivered to on_error
            self._events.put(("error", error))

    # ------------------------------------------------------------------ caller's thread

    def start(self) -> BackgroundJob:
        self._future = _engine_executor().submit(self._run)
        return self

    def cancel(self) -> None:
        """Ask the work to stop at its next cancel check; ``on_error`` then gets :class:`Cancelled`."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def running(self) -> bool:
        """True until :meth:`poll` has delivered the outcome."""
        return not self._finished

    def poll(self) -> bool:
        """Deliver queued events on this thread; returns :attr:`running`."""
        while not self._finished:
            try:
                kind, payload = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "progress":
                if self._on_progress is not None:
                    self._on_progress(*payload)
                continue
            self._finished = True
            if kind == "done" and self._cancel.is_set():
                kind, payload = "error", Cancelled("cancelled")
            if kind == "done":
                try:
                    self.result = self._finish(payload) if self._finish is not None else payload
                except BaseException as error:  # noqa: BLE001
                    kind, payload = "error", error
                else:
                    if self._on_done is not None:
                        self._on_done(self.result)
            if kind == "error":
                self.error = payload
                if self._on_error is not None:
                    self._on_error(payload)
        return not self._finished

    def wait(self, timeout_s: float | None = None, cancel: Callable[[], bool] | None = None, interval_s: float = 0.02) -> Any:
        """Poll until the job ends; returns the result or raises its error (``TimeoutError`` on timeout).

        ``cancel`` is polled too: once it returns True the job is cancelled (and this raises
        :class:`Cancelled` when the work stops)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.poll():
            if cancel is not None and not self.cancelled and cancel():
                self.cancel()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self._name}: still running after {timeout_s} s")
            wait_futures([self._future], timeout=interval_s)
        if self.error is not None:
            raise self.error
        return self.result
