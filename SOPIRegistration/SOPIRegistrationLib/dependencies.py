"""Which Python packages the module still needs. Standard library only (``packaging`` when
present), so it runs before torch and the engine's other requirements are installed."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["missing_requirements", "read_requirements"]


def read_requirements(path: str | Path) -> list[str]:
    """The requirement lines of a ``requirements.txt`` (comments and blank lines dropped)."""
    with open(path, encoding="utf-8") as handle:
        lines = [line.split("#")[0].strip() for line in handle]
    return [line for line in lines if line]


def missing_requirements(requirements: list[str]) -> list[str]:
    """The requirements (``name[>=version...]``) that are not installed or whose installed
    version does not satisfy them (the version is checked when ``packaging`` is available)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # presence only
        Requirement = None
    missing = []
    for text in requirements:
        name = re.split(r"[<>=!~ \[;]", text.strip(), maxsplit=1)[0]
        try:
            installed = version(name)
        except PackageNotFoundError:
            missing.append(text)
            continue
        if Requirement is not None and not Requirement(text).specifier.contains(installed, prereleases=True):
            missing.append(text)
    return missing
