"""Torch on a shared CPU: passive OpenMP waits unless the environment chose (issue 13 item 6)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

MODULE_DIR = os.path.join(os.path.dirname(__file__), "..", "SOPIRegistration")


def _policy_seen_by_torch(policy: str | None) -> str:
    """OMP_WAIT_POLICY as the environment holds it when torch loads OpenMP, in a fresh ``import sopi, torch``."""
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if policy is not None:
        environment["OMP_WAIT_POLICY"] = policy
    environment["PYTHONPATH"] = MODULE_DIR
    code = "import sys; import sopi; assert 'torch' not in sys.modules; import os, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    completed = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120, check=True)
    return completed.stdout.strip()


def test_sopi_makes_openmp_waits_passive_before_torch_loads():
    assert _policy_seen_by_torch(None) == "PASSIVE"
    assert _policy_seen_by_torch("ACTIVE") == "ACTIVE"  # the user's choice wins


@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_engine_process_environment_waits_passively_unless_set(monkeypatch, given):
    from SOPIRegistrationLib.process import engine_environment

    if given is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", given)
    assert engine_environment()["OMP_WAIT_POLICY"] == (given or "PASSIVE")
