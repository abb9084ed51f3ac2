"""BackgroundJob: engine work on a thread, callbacks on the polling thread."""

from __future__ import annotations

import threading

import pytest

from SOPIRegistrationLib.worker import BackgroundJob
from sopi.errors import Cancelled


def test_callbacks_run_on_the_polling_thread_in_order():
    seen = []
    release = threading.Event()

    def work(progress, cancel):
        progress(0.5, "half")
        release.wait(5)
        return 42

    job = BackgroundJob(
        work,
        on_progress=lambda fraction, message: seen.append(("progress", fraction, message, threading.get_ident())),
        on_done=lambda result: seen.append(("done", result, threading.get_ident())),
        finish=lambda result: result + 1,
    ).start()
    assert job.running
    release.set()
    assert job.wait(timeout_s=10) == 43
    me = threading.get_ident()
    assert seen == [("progress", 0.5, "half", me), ("done", 43, me)]
    assert not job.running and job.error is None


def test_nothing_is_delivered_without_polling():
    seen = []
    job = BackgroundJob(lambda progress, cancel: progress(1.0, "x"), on_progress=lambda *args: seen.append(args)).start()
    job._future.result(5)
    assert seen == []
    job.wait(timeout_s=5)
    assert seen == [(1.0, "x")]


def test_cancel_reaches_the_work_and_reports_cancelled():
    started = threading.Event()
    errors = []

    def work(progress, cancel):
        started.set()
        while not cancel():
            pass
        raise Cancelled("stopped")

    job = BackgroundJob(work, on_error=errors.append, on_done=lambda result: pytest.fail("on_done after cancel")).start()
    started.wait(5)
    job.cancel()
    with pytest.raises(Cancelled):
        job.wait(timeout_s=10)
    assert len(errors) == 1 and job.cancelled


def test_work_that_ignores_cancel_still_ends_cancelled():
    job = BackgroundJob(lambda progress, cancel: "finished anyway")
    job.cancel()
    job.start()
    with pytest.raises(Cancelled):
        job.wait(timeout_s=10)
    assert job.result is None


def test_errors_in_work_and_in_finish_go_to_on_error():
    errors = []
    failing = BackgroundJob(lambda progress, cancel: 1 / 0, on_error=errors.append).start()
    with pytest.raises(ZeroDivisionError):
        failing.wait(timeout_s=10)
    finishing = BackgroundJob(lambda progress, cancel: 1, finish=lambda result: {}["missing"], on_error=errors.append).start()
    with pytest.raises(KeyError):
        finishing.wait(timeout_s=10)
    assert [type(error) for error in errors] == [ZeroDivisionError, KeyError]


def test_wait_polls_a_cancel_callback_and_times_out():
    release = threading.Event()
    job = BackgroundJob(lambda progress, cancel: release.wait(10)).start()
    with pytest.raises(TimeoutError):
        job.wait(timeout_s=0.1)
    with pytest.raises(Cancelled):
        job.wait(timeout_s=10, cancel=lambda: (release.set(), True)[1])


def test_jobs_and_blocking_calls_share_one_engine_thread():
    from SOPIRegistrationLib.worker import on_engine_thread

    names = [BackgroundJob(lambda progress, cancel: threading.current_thread().name).start().wait(timeout_s=10) for _ in range(2)]
    names.append(on_engine_thread(lambda: threading.current_thread().name))
    assert len(set(names)) == 1 and names[0] != threading.current_thread().name
    # a blocking call made from the engine thread runs in place instead of deadlocking
    nested = BackgroundJob(lambda progress, cancel: on_engine_thread(lambda: threading.current_thread().name)).start()
    assert nested.wait(timeout_s=10) == names[0]
