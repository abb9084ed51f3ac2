"""Engine work in a separate process, as Slicer's reference AI modules run theirs.

A :class:`ProcessJob` runs one or more command lines in turn (``python -m sopi --progress json
...``), each in its own process group, with stdout and stderr going to files in the job's
temporary folder. :meth:`ProcessJob.poll` (Slicer's timer, or :meth:`ProcessJob.wait`) reads
the new progress lines, notices the end of a step, starts the next, and at the end calls
``finish(folder)`` and ``on_done`` on the polling thread, so MRML nodes are written there.
Nothing runs on a thread of Slicer's process: Slicer's main thread holds Python's lock while
Qt idles, which starves Python threads (issue 14, finding 2).

:meth:`ProcessJob.cancel` kills the process group (the process and its children) at once.
A failed step raises :class:`sopi.errors.InputError` for bad input (exit code 2, the message
``sopi`` printed) or :class:`EngineProcessError`, whose ``details`` hold the step's stderr.
The temporary folder is removed when the job ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sopi import short_openmp_waits
from sopi.errors import Cancelled, InputError

__all__ = ["EngineProcessError", "ProcessJob", "Step", "engine_environment", "python_executable", "sopi_command"]

#: The folder that holds the ``sopi`` package (the module's folder in Slicer).
ENGINE_PATH = Path(__file__).resolve().parents[1]
ProgressCallback = Callable[[float, str], None]


class EngineProcessError(RuntimeError):
    """An engine process failed; ``details`` is what it wrote on stderr (for the error dialog)."""

    def __init__(self, message: str, details: str = "", returncode: int | None = None) -> None:
        super().__init__(message)
        self.details = details
        self.returncode = returncode


def python_executable() -> str:
    """The Python that runs the engine: Slicer's ``PythonSlicer`` launcher when this runs in Slicer
    (it sets up Slicer's library paths, as SlicerTotalSegmentator relies on), else this interpreter."""
    if "slicer" in sys.modules and hasattr(sys.modules["slicer"], "app"):
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def sopi_command(*arguments: str | os.PathLike) -> list[str]:
    """``python -m sopi --progress json ARGUMENTS``."""
    return [python_executable(), "-m", "sopi", "--progress", "json", *(str(argument) for argument in arguments)]


def engine_environment() -> dict[str, str]:
    """This process's environment with the engine's folder first on ``PYTHONPATH`` and short
    OpenMP waits (:func:`sopi.short_openmp_waits`; unless set)."""
    environment = dict(os.environ)
    paths = [str(ENGINE_PATH)] + [path for path in environment.get("PYTHONPATH", "").split(os.pathsep) if path]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    environment["PYTHONUNBUFFERED"] = "1"
    short_openmp_waits(environment)  # torch's threads spin briefly, then sleep, beside Slicer
    return environment


@dataclass
class Step:
    """One command of a job: its share of the job's progress and how its messages read."""

    command: list[str]
    share: float = 1.0
    describe: Callable[[str], str] | None = None


def _death_signal_setter():
    """A function for the child to call before it runs (Linux): be killed when the process that
    started it dies, so a crashed or killed Slicer leaves no engine running. ``prctl`` is looked
    up here, in the parent: the child, forked from a process with threads, only calls it."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def _kill_group(process: subprocess.Popen) -> None:
    """Kill a process and every process it started (its process group; its tree on Windows)."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        process.kill()
    except OSError:
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class ProcessJob:
    """Run ``steps`` one after another in child processes; the interface of a background job.

    Args:
        steps: the commands; a step's progress fractions fill its ``share`` of the bar.
        folder: the job's temporary folder (inputs already written); removed at the end.
        finish: turns the folder (outputs written by the steps) into the job's result, on the
            polling thread (it may write MRML nodes); its errors go to ``on_error``.
        on_progress, on_done, on_error: as for the module's jobs; ``on_error`` gets
            :class:`Cancelled` after :meth:`cancel`.
    """

    def __init__(self, steps: Sequence[Step], folder: str | Path, finish: Callable[[Path], Any] | None = None,
                 on_progress: ProgressCallback | None = None, on_done: Callable[[Any], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None, name: str = "SOPIRegistration") -> None:
        if not steps:
            raise ValueError("a process job needs at least one step")
        self.steps = list(steps)
        self.folder = Path(folder)
        self._finish = finish
        self._on_progress, self._on_done, self._on_error = on_progress, on_done, on_error
        self._name = name
        self._index = -1
        self._done_share = 0.0
        self._process: subprocess.Popen | None = None
        self._stdout = None
        self._pending = b""
        self._cancelled = False
        self._finished = False
        self.result: Any = None
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ process control

    @property
    def pid(self) -> int | None:
        """The running step's process id (its process group id on POSIX)."""
        return self._process.pid if self._process is not None else None

    def start(self) -> ProcessJob:
        """Start the first step; if it cannot start, the folder is removed and the error raised."""
        try:
            self._start_next()
        except BaseException:
            self._finished = True
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        return self

    def _start_next(self) -> None:
        if self._process is not None:
            self._done_share += self.steps[self._index].share
        self._index += 1
        self._close_output()
        step = self.steps[self._index]
        stdout_path, stderr_path = self.folder / f"step{self._index}.out", self.folder / f"step{self._index}.err"
        if os.name == "nt":
            options: dict = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
        else:
            options = {"start_new_session": True}
            setter = _death_signal_setter() if sys.platform.startswith("linux") else None
            if setter is not None:
                options["preexec_fn"] = setter
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            self._process = None
            self._process = subprocess.Popen(step.command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                             cwd=self.folder, env=engine_environment(), **options)
        self._stdout = open(stdout_path, "rb")  # noqa: SIM115 - read as the process writes, closed at the step's end
        self._pending = b""

    def _close_output(self) -> None:
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None

    def cancel(self) -> None:
        """Kill the running process and its children now; :meth:`poll` then reports :class:`Cancelled`."""
        if self._finished or self._cancelled:
            return
        self._cancelled = True
        if self._process is not None:
            _kill_group(self._process)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def running(self) -> bool:
        """True until :meth:`poll` has delivered the outcome."""
        return not self._finished

    # ------------------------------------------------------------------ polling

    def _read_progress(self) -> None:
        if self._stdout is None:
            return
        self._pending += self._stdout.read()
        *lines, self._pending = self._pending.split(b"\n")
        step = self.steps[self._index]
        for raw in lines:
            try:
                update = json.loads(raw.decode("utf-8", "replace"))
                fraction, message = float(update["fraction"]), str(update.get("message", ""))
            except (ValueError, KeyError, TypeError):
                continue  # not a progress line (``sopi`` prints "wrote ..." at the end)
            if self._on_progress is not None:
                text = step.describe(message) if step.describe is not None else message
                self._on_progress(min(1.0, self._done_share + step.share * min(max(fraction, 0.0), 1.0)), text)

    def _stderr(self) -> str:
        try:
            return (self.folder / f"step{self._index}.err").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _step_error(self, returncode: int) -> BaseException:
        stderr = self._stderr()
        lines = [line for line in stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit code {returncode}"
        if returncode == 2:  # sopi's bad-input exit: "sopi COMMAND: error: MESSAGE"
            return InputError(last.split(": error: ", 1)[-1])
        return EngineProcessError(f"{self._name}: the engine process failed (exit code {returncode}): {last}", stderr, returncode)

    def poll(self) -> bool:
        """Deliver progress and, once the last step ended, the outcome; returns :attr:`running`."""
        if self._finished:
            return False
        if not self._cancelled:
            self._read_progress()  # on_progress may cancel
        if self._cancelled:
            return self._end(Cancelled("cancelled"))
        returncode = self._process.poll()
        if returncode is None:
            return True
        self._read_progress()
        if self._cancelled:
            return self._end(Cancelled("cancelled"))
        if returncode != 0:
            return self._end(self._step_error(returncode))
        if self._index + 1 < len(self.steps):
            try:
                self._start_next()
            except OSError as error:
                return self._end(EngineProcessError(f"{self._name}: could not start the engine process: {error}"))
            return True
        try:
            self.result = self._finish(self.folder) if self._finish is not None else self.folder
        except BaseException as error:  # noqa: BLE001 - delivered to on_error
            return self._end(error)
        return self._end(None)

    def _end(self, error: BaseException | None) -> bool:
        self._finished = True
        self._close_output()
        if self._process is not None and self._process.poll() is None:
            _kill_group(self._process)
        shutil.rmtree(self.folder, ignore_errors=True)
        if error is not None:
            self.error = error
            if self._on_error is not None:
                self._on_error(error)
        elif self._on_done is not None:
            self._on_done(self.result)
        return False

    def wait(self, timeout_s: float | None = None, cancel: Callable[[], bool] | None = None, interval_s: float = 0.05) -> Any:
        """Poll until the job ends; returns the result or raises its error (``TimeoutError`` on
        timeout, after killing the process). ``cancel`` is polled too: once it returns True the
        job is cancelled and this raises :class:`Cancelled`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.poll():
            if cancel is not None and cancel():
                self.cancel()
                continue
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                self.poll()
                raise TimeoutError(f"{self._name}: still running after {timeout_s} s")
            time.sleep(interval_s)
        if self.error is not None:
            raise self.error
        return self.result


def job_folder(root: str | Path | None = None) -> Path:
    """A new temporary folder for a job's inputs and outputs (under ``root`` if given)."""
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="SOPIRegistration-", dir=root))
