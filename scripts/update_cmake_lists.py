"""Rewrite the module CMakeLists.txt file lists from the files on disk (run from the repository root).

tests/test_extension_files.py fails when the lists and the disk disagree; this fixes them.
"""

from __future__ import annotations

import re
from pathlib import Path

MODULE = Path(__file__).resolve().parents[1] / "SOPIRegistration"
IGNORED_RESOURCES = {".gitignore"}


def scripts() -> list[str]:
    files = [MODULE / "SOPIRegistration.py", *(MODULE / "SOPIRegistrationLib").rglob("*.py"), *(MODULE / "sopi").rglob("*.py")]
    names = sorted(str(path.relative_to(MODULE)) for path in files)
    return [name.replace("SOPIRegistration.py", "${MODULE_NAME}.py") if name == "SOPIRegistration.py" else name for name in names]


def resources() -> list[str]:
    names = sorted(
        str(path.relative_to(MODULE)) for path in (MODULE / "Resources").rglob("*")
        if path.is_file() and path.name not in IGNORED_RESOURCES
    )
    return [name.replace("SOPIRegistration.", "${MODULE_NAME}.") for name in names]


def main() -> None:
    path = MODULE / "CMakeLists.txt"
    text = path.read_text()
    for variable, entries in (("MODULE_PYTHON_SCRIPTS", scripts()), ("MODULE_PYTHON_RESOURCES", resources())):
        block = f"set({variable}\n" + "".join(f"  {entry}\n" for entry in entries) + "  )"
        text, count = re.subn(rf"set\({variable}\s+.*?\)", lambda _: block, text, count=1, flags=re.S)
        if count != 1:
            raise SystemExit(f"{path}: set({variable} ...) not found")
    path.write_text(text)
    print(f"updated {path}")


if __name__ == "__main__":
    main()
