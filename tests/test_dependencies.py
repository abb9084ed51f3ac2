"""The module's dependency check (runs before torch is installed, so standard library only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from SOPIRegistrationLib.dependencies import missing_requirements, read_requirements

MODULE_DIR = Path(__file__).resolve().parents[1] / "SOPIRegistration"


def test_missing_and_too_old_packages_are_listed():
    import numpy

    major = int(numpy.__version__.split(".")[0])
    requirements = ["numpy>=1.0", f"numpy>={major + 100}", "surely-not-an-installed-package-xyz>=1", "scipy"]
    assert missing_requirements(requirements) == [f"numpy>={major + 100}", "surely-not-an-installed-package-xyz>=1"]


def test_shipped_requirements_are_satisfied_in_the_test_environment():
    requirements = read_requirements(MODULE_DIR / "Resources" / "requirements.txt")
    assert requirements and all(not line.startswith("#") for line in requirements)
    assert missing_requirements(requirements) == []


def test_dependency_check_does_not_import_torch():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import SOPIRegistrationLib.dependencies; "
        "print('torch' in sys.modules, 'sopi' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR)], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "False"]
