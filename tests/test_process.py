"""The engine's process path (``SOPIRegistrationLib.process``) and ``sopi --progress json``; no Slicer needed."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from SOPIRegistrationLib.process import EngineProcessError, ProcessJob, Step, job_folder, sopi_command
from sopi.errors import Cancelled, InputError


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _progress_line(fraction: float, message: str) -> str:
    return json.dumps({"fraction": fraction, "stage": message.split()[0], "message": message})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its parent counts as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_steps_run_in_turn_and_progress_fills_each_share(tmp_path):
    folder = job_folder(tmp_path)
    first = f"print({_progress_line(0.5, 'one half')!r}); print('wrote something'); open('a.txt', 'w').write('A')"
    second = f"import pathlib; print({_progress_line(1.0, 'two done')!r}); pathlib.Path('b.txt').write_text(pathlib.Path('a.txt').read_text(encoding='utf-8') + 'B')"
    seen, done = [], []
    job = ProcessJob([Step(_python(first), 0.25), Step(_python(second), 0.75, str.upper)], folder,
                     finish=lambda path: (path / "b.txt").read_text(encoding="utf-8"), on_progress=lambda f, m: seen.append((f, m)),
                     on_done=done.append).start()
    assert job.wait(timeout_s=30) == "AB" and done == ["AB"]
    assert seen == [(0.125, "one half"), (1.0, "TWO DONE")]
    assert not folder.exists() and not job.running


@pytest.mark.skipif(os.name == "nt", reason="process groups are POSIX; Windows uses taskkill /T")
def test_cancel_kills_the_process_and_its_children(tmp_path):
    folder = job_folder(tmp_path)
    code = ("import subprocess, sys, time, json\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(json.dumps({'fraction': 0.1, 'stage': 'child', 'message': str(child.pid)}), flush=True)\n"
            "time.sleep(60)\n")
    children, errors = [], []
    job = ProcessJob([Step(_python(code))], folder, on_progress=lambda f, m: children.append(int(m)),
                     on_done=lambda result: pytest.fail("on_done after a cancel"), on_error=errors.append).start()
    parent = job.pid
    deadline = time.monotonic() + 30
    while not children and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.02)
    assert children and _alive(children[0]) and _alive(parent)
    job.cancel()
    assert not job.poll() and isinstance(errors[0], Cancelled)
    assert _wait_gone(parent) and _wait_gone(children[0])
    assert not folder.exists()
    with pytest.raises(Cancelled):
        job.wait(timeout_s=1)


def test_a_failure_carries_stderr_and_bad_input_reads_as_input_error(tmp_path):
    crash = ProcessJob([Step(_python("import sys; print('some warning', file=sys.stderr); raise RuntimeError('boom')"))],
                       job_folder(tmp_path)).start()
    with pytest.raises(EngineProcessError, match="exit code 1.*RuntimeError: boom") as caught:
        crash.wait(timeout_s=30)
    assert "some warning" in caught.value.details and "Traceback" in caught.value.details
    bad = ProcessJob([Step(_python("import sys; print('sopi register: error: --ct x.nii: no such file', file=sys.stderr); sys.exit(2)"))],
                     job_folder(tmp_path)).start()
    with pytest.raises(InputError, match=r"^--ct x.nii: no such file$"):
        bad.wait(timeout_s=30)
    # a later step does not run after a failed one
    folder = job_folder(tmp_path)
    skipped = ProcessJob([Step(_python("raise SystemExit(3)")), Step(_python("open('ran', 'w')"))], folder).start()
    with pytest.raises(EngineProcessError, match="exit code 3"):
        skipped.wait(timeout_s=30)
    assert not (tmp_path / "ran").exists()


def test_a_command_that_cannot_start_removes_its_folder(tmp_path):
    folder = job_folder(tmp_path)
    with pytest.raises(OSError):
        ProcessJob([Step([str(tmp_path / "no-such-python")])], folder).start()
    assert not folder.exists()


def test_timeout_kills_the_process(tmp_path):
    job = ProcessJob([Step(_python("import time; time.sleep(60)"))], job_folder(tmp_path)).start()
    pid = job.pid
    with pytest.raises(TimeoutError, match="still running after 0.5 s"):
        job.wait(timeout_s=0.5)
    assert _wait_gone(pid)


def test_sopi_progress_json_prints_one_line_per_update(tmp_path):
    """``sopi --progress json segment``, run as the module runs it: stdout holds JSON progress lines."""
    import subprocess

    from SOPIRegistrationLib.process import engine_environment

    sample = os.path.join(os.path.dirname(__file__), "..", "SOPIRegistration", "Resources", "SampleData", "sample_ct.nii.gz")
    completed = subprocess.run(sopi_command("segment", sample, "--out", tmp_path / "spine.nii.gz"), capture_output=True,
                               text=True, env=engine_environment(), timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    assert len(lines) >= 3 and all(set(line) == {"fraction", "stage", "message"} for line in lines)
    fractions = [line["fraction"] for line in lines]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in fractions)
    assert all(line["message"].startswith(line["stage"]) for line in lines)
    assert "it/s" not in completed.stderr and "%|" not in completed.stderr  # no tqdm bar
    assert (tmp_path / "spine.nii.gz").exists()


def test_what_the_module_uses_before_the_dependencies_needs_no_torch():
    """Slicer loads the module and picks its inputs before torch is installed (finding 6)."""
    import subprocess

    from SOPIRegistrationLib.process import engine_environment

    code = ("import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
            "import SOPIRegistrationLib.inputs, SOPIRegistrationLib.dependencies, SOPIRegistrationLib.settings\n"
            "print('ok')\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=engine_environment(), timeout=60,
                               check=False)
    assert completed.returncode == 0 and completed.stdout.strip() == "ok", completed.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_engine_dies_with_the_process_that_started_it(tmp_path):
    """A killed Slicer leaves no engine running (the engine has a session of its own, so a
    signal to Slicer's process group would not reach it)."""
    import subprocess

    from SOPIRegistrationLib.process import engine_environment

    parent = ("import sys, time\n"
              "from SOPIRegistrationLib.process import ProcessJob, Step, job_folder\n"
              f"job = ProcessJob([Step([sys.executable, '-c', 'import time; time.sleep(60)'])], job_folder({str(tmp_path)!r})).start()\n"
              "print(job.pid, flush=True)\n"
              "time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, env=engine_environment())
    child = int(process.stdout.readline())
    assert _alive(child)
    process.kill()
    process.wait(timeout=10)
    assert _wait_gone(child)
