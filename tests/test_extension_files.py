"""Static checks of the Slicer extension files against the files on disk."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "SOPIRegistration"


def cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found"
    return [line.strip().replace("${MODULE_NAME}", "SOPIRegistration") for line in match.group(1).split() if line.strip()]


def test_module_cmake_lists_every_python_file_and_resource():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES")
    python_files = [MODULE / "SOPIRegistration.py", *(MODULE / "SOPIRegistrationLib").rglob("*.py"), *(MODULE / "sopi").rglob("*.py")]
    on_disk_scripts = sorted(str(path.relative_to(MODULE)) for path in python_files)
    assert sorted(scripts) == on_disk_scripts
    on_disk_resources = sorted(
        str(path.relative_to(MODULE)) for path in (MODULE / "Resources").rglob("*") if path.is_file()
    )
    assert sorted(resources) == on_disk_resources
    assert "slicerMacroBuildScriptedModule" in text
    assert "Resources/UI/SOPIRegistration.ui" in resources and "Resources/requirements.txt" in resources
    # the module's self-test runs as a ctest
    assert re.search(r"if\(BUILD_TESTING\)\s+.*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text, re.S)


#: Keys of Slicer's extension catalog entry schema v1.0.2 (Slicer/Schemas), and the required ones.
CATALOG_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies", "dicom_support_rule",
                "build_subdirectory", "enabled", "tier"}
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}


def test_extension_description_is_consistent():
    import json

    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    project = re.search(r"^project\((\w+)\)", cmake, re.M).group(1)
    assert not list(REPO.glob("*.s4ext"))  # superseded by the catalog entry <ExtensionName>.json
    entry = json.loads((REPO / f"{project}.json").read_text(encoding="utf-8"))
    assert CATALOG_REQUIRED <= set(entry) <= CATALOG_KEYS
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"?PyTorch"?\)', cmake) and entry["build_dependencies"] == ["PyTorch"]
    assert re.search(r'set\(EXTENSION_CATEGORY\s+"Registration"\)', cmake) and entry["category"] == "Registration"
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE\s+"([^"]+)"\)', cmake).group(1)
    assert entry["scm_url"] == homepage + ".git"
    assert "add_subdirectory(SOPIRegistration)" in cmake
    for variable in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf"set\(EXTENSION_{variable}\s+\"[^\"]+\"\)", cmake), variable
    testing = (MODULE / "Testing" / "Python" / "CMakeLists.txt").read_text(encoding="utf-8")
    for script in re.findall(r"SCRIPT\s+\$\{CMAKE_CURRENT_SOURCE_DIR\}/(\S+)\)", testing):
        assert (MODULE / "Testing" / "Python" / script).is_file()


def test_engine_never_imports_slicer_qt_or_vtk():
    pattern = re.compile(r"^\s*(import|from)\s+(slicer|qt|ctk|vtk)\b", re.M)
    offenders = [str(path) for path in (MODULE / "sopi").rglob("*.py") if pattern.search(path.read_text(encoding="utf-8"))]
    assert offenders == []
