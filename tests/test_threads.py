"""Torch on a shared CPU: short OpenMP waits unless the environment chose (issue 13 item 6)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

MODULE_DIR = os.path.join(os.path.dirname(__file__), "..", "SOPIRegistration")
_OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _waits_read_by_openmp(**given: str) -> dict[str, str]:
    """What torch's OpenMP runtime read at start-up in a fresh ``import sopi, torch`` (its own report,
    ``OMP_DISPLAY_ENV=VERBOSE``), with ``given`` in the environment."""
    environment = {key: value for key, value in os.environ.items() if key not in _OPENMP_VARIABLES}
    environment.update(given, PYTHONPATH=MODULE_DIR, OMP_DISPLAY_ENV="VERBOSE")
    code = "import sys; import sopi; assert 'torch' not in sys.modules; import torch; torch.ones(1 << 16).sum()"
    completed = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120, check=True)
    return dict(re.findall(r"^\s*(OMP_WAIT_POLICY|GOMP_SPINCOUNT) = '([^']*)'", completed.stderr, re.MULTILINE))


def test_sopi_sets_short_openmp_waits_before_torch_loads():
    import sopi

    seen = _waits_read_by_openmp()
    if not seen:
        pytest.skip("torch's OpenMP runtime does not report its settings (not GNU OpenMP)")
    assert seen == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": str(sopi.OPENMP_SPIN_COUNT)}
    # the user's choices win: a policy of their own keeps OpenMP's spinning for it, a spin count of their own is kept
    assert _waits_read_by_openmp(OMP_WAIT_POLICY="ACTIVE") == {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "30000000000"}
    assert _waits_read_by_openmp(GOMP_SPINCOUNT="7") == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "7"}


@pytest.mark.parametrize("given", [{}, {"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "7"}])
def test_engine_process_environment_waits_briefly_unless_set(monkeypatch, given):
    from SOPIRegistrationLib.process import engine_environment
    from sopi import OPENMP_SPIN_COUNT

    for name in _OPENMP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    environment = engine_environment()
    expected = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": str(OPENMP_SPIN_COUNT), **given}
    if "OMP_WAIT_POLICY" in given:
        expected.pop("GOMP_SPINCOUNT")  # OpenMP's own spin count for the policy chosen
    assert {name: environment[name] for name in _OPENMP_VARIABLES if name in environment} == expected


def test_side_by_side_runs_every_item_single_threaded_in_order_and_restores_the_thread_count():
    import threading

    import torch

    from sopi.torch_workers import side_by_side

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        seen = side_by_side(lambda item: (item * item, torch.get_num_threads(), threading.current_thread().name), list(range(7)))
        assert [value for value, _, _ in seen] == [item * item for item in range(7)]
        assert {count for _, count, _ in seen} == {1}  # torch single-threaded in each worker
        assert all(name.startswith("sopi-torch") for _, _, name in seen)
        assert torch.get_num_threads() == 2

        def failing(item: int) -> int:
            if item == 3:
                raise ValueError("item 3")
            return item

        with pytest.raises(ValueError, match="item 3"):
            side_by_side(failing, list(range(5)))
        assert torch.get_num_threads() == 2  # restored after an error too

        torch.set_num_threads(1)  # one thread: in order, in the caller's thread
        assert side_by_side(lambda item: threading.current_thread().name, [0, 1]) == [threading.current_thread().name] * 2
    finally:
        torch.set_num_threads(threads)
