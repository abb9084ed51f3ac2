"""Shared fixtures: paths to ../shared data and small synthetic volumes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MODULE_DIR = REPO / "SOPIRegistration"
if str(MODULE_DIR) not in sys.path:  # SOPIRegistrationLib sits beside the engine, as Slicer loads it
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _keep_default_dtype():
    """geomstats may switch torch's default dtype: restore it after every test."""
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)
