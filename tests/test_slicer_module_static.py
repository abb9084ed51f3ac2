"""Static checks of the Slicer-only file (``SOPIRegistration.py``) and its ``.ui``: they cannot
be imported outside Slicer, so they are read as source and XML."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "SOPIRegistration"
MODULE_FILE = MODULE_DIR / "SOPIRegistration.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SOPIRegistration.ui"

#: parameterNodeWrapper's GUI connectors, by value type (Slicer's guiConnectors.py; exact widget classes).
WIDGETS_FOR_TYPE = {
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "str": {"QLineEdit", "QTextEdit"},
    "Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
}
NEEDS_RANGE = {"ctkSliderWidget", "QSlider"}


def _source_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def _parameter_fields() -> dict[str, dict]:
    """Annotated fields of the class decorated with ``parameterNodeWrapper``."""
    for node in ast.walk(_source_tree()):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(decorator, ast.Name) and decorator.id == "parameterNodeWrapper" for decorator in node.decorator_list
        ):
            fields = {}
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign):
                    annotation = statement.annotation
                    validators: list[str] = []
                    if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "Annotated":
                        elements = annotation.slice.elts
                        annotation = elements[0]
                        validators = [ast.unparse(element).split("(")[0] for element in elements[1:]]
                    type_name = ast.unparse(annotation).split(".")[-1]
                    fields[statement.target.id] = {"type": type_name, "validators": validators}
            return fields
    raise AssertionError("no @parameterNodeWrapper class in SOPIRegistration.py")


def _ui_widgets() -> dict[str, ElementTree.Element]:
    root = ElementTree.parse(UI_FILE).getroot()
    return {widget.get("name"): widget for widget in root.iter("widget")}


def _property(widget: ElementTree.Element, name: str) -> ElementTree.Element | None:
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            return prop
    return None


def _bound_widgets() -> dict[str, ElementTree.Element]:
    bound = {}
    for widget in _ui_widgets().values():
        prop = _property(widget, "SlicerParameterName")
        if prop is not None:
            assert prop.get("stdset") == "0", f"{widget.get('name')}: SlicerParameterName must be a dynamic property"
            name = prop.find("string").text
            assert name not in bound, f"parameter {name} is bound to two widgets"
            bound[name] = widget
    return bound


def _module_constant(name: str):
    for node in _source_tree().body:
        if isinstance(node, ast.Assign) and any(isinstance(target, ast.Name) and target.id == name for target in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not defined in SOPIRegistration.py")


def test_every_ui_parameter_names_a_field_with_a_compatible_widget():
    fields, bound = _parameter_fields(), _bound_widgets()
    assert set(bound) == set(fields), f"unbound fields {set(fields) - set(bound)}, unknown names {set(bound) - set(fields)}"
    for name, widget in bound.items():
        field, widget_class = fields[name], widget.get("class")
        if field["type"].startswith("vtkMRML"):
            assert widget_class == "qMRMLNodeComboBox", name
            types = [item.text for item in _property(widget, "nodeTypes").iter("string")]
            assert types == [field["type"]], f"{name}: nodeTypes {types} differ from {field['type']}"
        elif "Choice" in field["validators"]:
            assert widget_class == "QComboBox", f"{name}: a Choice is shown in a QComboBox, not {widget_class}"
        else:
            assert widget_class in WIDGETS_FOR_TYPE[field["type"]], f"{name}: {widget_class} cannot show a {field['type']}"
        if widget_class in NEEDS_RANGE:
            assert "WithinRange" in field["validators"], f"{name}: {widget_class} needs WithinRange"
        if widget_class == "QComboBox":
            assert "Choice" in field["validators"], f"{name}: a QComboBox needs a Choice"


def test_every_widget_the_code_uses_exists_in_the_ui():
    names = set(_ui_widgets())
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text(encoding="utf-8")))
    used |= {name[0].lower() + name[1:] + "SliderWidget" for name in _module_constant("POSE_PARAMETERS")}
    assert used - names == set()
    assert {"registerButton", "progressBar", "statusLabel"} <= used


def test_ui_connects_every_mrml_widget_to_the_scene():
    root = ElementTree.parse(UI_FILE).getroot()
    assert root.find("widget").get("class") == "qMRMLWidget" and root.find("widget").get("name") == "SOPIRegistration"
    mrml = {w.get("name") for w in root.iter("widget") if w.get("class", "").startswith("qMRML") and w.get("name") != "SOPIRegistration"}
    connected = {c.find("receiver").text for c in root.iter("connection") if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert mrml and mrml == connected
    declared = {custom.find("class").text for custom in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")} - {"QWidget", "QLabel", "QPushButton", "QComboBox", "QDoubleSpinBox",
                                                           "QSpinBox", "QCheckBox", "QProgressBar"}
    assert used <= declared


def test_register_button_starts_disabled():
    register = _ui_widgets()["registerButton"]
    assert _property(register, "enabled").find("bool").text == "false"


def test_choice_lists_match_the_engine():
    from SOPIRegistrationLib.display import FUSION_MODES
    from sopi.geometry import PRESETS
    from sopi.io_xray import POLARITIES
    from sopi.registration.methods import METHODS

    methods = _module_constant("METHOD_CHOICES")
    assert sorted(methods) == sorted(METHODS) and methods[0] == "sopi+opt"
    presets = _module_constant("GEOMETRY_PRESETS")
    assert set(presets) == set(PRESETS)
    for name, (sdd, sod) in presets.items():
        assert (sdd, sod) == (PRESETS[name].sdd_mm, PRESETS[name].source_to_isocenter_mm)
    assert set(_module_constant("POLARITY_CHOICES")) <= set(POLARITIES)
    assert tuple(_module_constant("FUSION_CHOICES")) == FUSION_MODES
    fields = _parameter_fields()
    assert set(_module_constant("POSE_PARAMETERS")) <= set(fields)


@pytest.mark.parametrize("version", [(3, 9), (3, 12)])
def test_module_file_parses_as_python(version):
    source = MODULE_FILE.read_text(encoding="utf-8")
    ast.parse(source, filename=str(MODULE_FILE), feature_version=version)
    assert "from __future__ import annotations" not in source  # parameterNodeWrapper needs real annotations


def test_only_the_module_file_imports_qt_ctk_or_scripted_module_classes():
    pattern = re.compile(r"^\s*(import|from)\s+(qt|ctk|slicer\.ScriptedLoadableModule)\b", re.M)
    offenders = [
        str(path.relative_to(MODULE_DIR)) for path in MODULE_DIR.rglob("*.py")
        if path != MODULE_FILE and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [] and pattern.search(MODULE_FILE.read_text(encoding="utf-8"))


def test_lib_runs_headless():
    forbidden = re.compile(r"slicer\.(app|mrmlScene|modules)\b|^\s*(import|from)\s+(qt|ctk)\b", re.M)
    offenders = [path.name for path in (MODULE_DIR / "SOPIRegistrationLib").glob("*.py") if forbidden.search(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_help_acknowledges_the_paper_and_requirements_skip_bundled_packages():
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert "Embedded Feature Similarity" in source and "Minheng Chen" in source
    assert re.search(r'categories = \[translate\("qSlicerAbstractCoreModule", "Registration"\)\]', source)
    requirements = [line.split("#")[0].strip() for line in (MODULE_DIR / "Resources" / "requirements.txt").read_text().splitlines()]
    names = {re.split(r"[<>=!~ ]", line)[0].lower() for line in requirements if line}
    assert names and not names & {"vtk", "simpleitk", "numpy", "torch", "slicer-core"}
    pyproject = (MODULE_DIR.parent / "pyproject.toml").read_text()
    assert all(f'"{name}' in pyproject.lower() for name in names)


def test_module_file_loads_before_the_dependencies_are_installed():
    """Slicer imports the module at start-up, before torch may exist: no top-level import of
    torch, the engine or the Lib (they are imported inside methods, after ensureDependencies)."""
    top_level = set()
    for node in _source_tree().body:
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            top_level.add((node.module or "").split(".")[0])
    assert not top_level & {"torch", "sopi", "SOPIRegistrationLib", "numpy", "SimpleITK", "scipy"}
