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
    internal = set(_module_constant("INTERNAL_PARAMETERS"))
    assert internal <= set(fields) and not internal & set(bound)
    shown = set(fields) - internal
    assert set(bound) == shown, f"unbound fields {shown - set(bound)}, unknown names {set(bound) - shown}"
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
    from sopi.registration.methods import DEFAULT_METHOD, METHODS

    methods = _module_constant("METHOD_CHOICES")
    assert sorted(methods) == sorted(METHODS) and methods[0] == DEFAULT_METHOD == "global+opt"
    presets = _module_constant("GEOMETRY_PRESETS")
    assert set(presets) == set(PRESETS)
    for name, (sdd, sod) in presets.items():
        assert (sdd, sod) == (PRESETS[name].sdd_mm, PRESETS[name].source_to_isocenter_mm)
    assert set(_module_constant("POLARITY_CHOICES")) <= set(POLARITIES)
    from SOPIRegistrationLib.orientation import XRAY_ORIENTATIONS
    from sopi.xray_orientation import FLIPS

    assert list(_module_constant("FLIP_CHOICES")) == list(XRAY_ORIENTATIONS) and set(XRAY_ORIENTATIONS) == set(FLIPS) - {"auto"}
    from sopi.geometry import NOMINAL_VIEWS

    assert sorted(_module_constant("VIEW_CHOICES")) == sorted(NOMINAL_VIEWS)
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
    requirements = [line.split("#")[0].strip() for line in (MODULE_DIR / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()]
    names = {re.split(r"[<>=!~ ]", line)[0].lower() for line in requirements if line}
    assert names and not names & {"vtk", "simpleitk", "numpy", "torch", "slicer-core"}
    pyproject = (MODULE_DIR.parent / "pyproject.toml").read_text(encoding="utf-8")
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


# --------------------------------------------------------------------------- issue 14's findings that a static check can see


def _function(name: str) -> ast.FunctionDef:
    for node in ast.walk(_source_tree()):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise AssertionError(f"no function {name} in SOPIRegistration.py")


def _calls(function: ast.AST) -> set[str]:
    return {ast.unparse(node.func) for node in ast.walk(function) if isinstance(node, ast.Call)}


def test_finding_4_the_gui_is_connected_with_a_tag_on_every_slicer():
    """Slicer 5.8's connectGui returns no tag; connectParametersToGui does, so disconnectGui works."""
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert ".connectGui(" not in source
    assert "parameterNode.connectParametersToGui" in _calls(_function("_connectGui"))
    assert "self._parameterNode.disconnectGui" in _calls(_function("setParameterNode"))
    assert "self.setParameterNode" in _calls(_function("exit"))  # leaving the module disconnects


def test_findings_5_and_6_the_display_follows_the_parameter_node_once_per_change():
    source = MODULE_FILE.read_text(encoding="utf-8")
    for widget in ("opacitySliderWidget", "fusionModeComboBox", "placeCtCheckBox"):
        assert not re.search(rf"self\.ui\.{widget}\.connect\(", source), f"{widget}: read the parameter node, not the widget"
    setter = _function("setParameterNode")
    order = [ast.unparse(node.func) for node in ast.walk(setter) if isinstance(node, ast.Call)]
    assert order.index("self._connectGui") < order.index("self.addObserver")  # observe after the GUI writes the node
    modified = ast.unparse(_function("_onParameterNodeModified"))
    assert "self._shownDisplay" in modified and "foregroundOpacity" in modified and "fusionMode" in modified
    # without the dependencies, refreshing the display does nothing (no ImportError at each entry)
    assert "self.logic.dependenciesReady" in _calls(_function("_showResults"))


def test_finding_7_the_gui_never_waits_for_a_job():
    source = MODULE_FILE.read_text(encoding="utf-8")
    widget = next(node for node in _source_tree().body if isinstance(node, ast.ClassDef) and node.name == "SOPIRegistrationWidget")
    assert not any(call.endswith(".wait") for call in _calls(widget))
    assert "on_engine_thread" not in source
    lib = MODULE_DIR / "SOPIRegistrationLib"
    assert not (lib / "worker.py").exists()
    assert not re.search(r"threading|ThreadPoolExecutor", "".join(path.read_text(encoding="utf-8") for path in lib.glob("*.py")))


def test_finding_9_display_nodes_are_parameter_node_references():
    fields = _parameter_fields()
    assert fields["fusionImage"]["type"] == "vtkMRMLScalarVolumeNode" and fields["carmMarker"]["type"] == "vtkMRMLMarkupsLineNode"
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert "_fusionNode" not in source and "_carmNode" not in source


def test_finding_11_buttons_show_errors_with_details_and_the_3d_view_is_optional():
    source = MODULE_FILE.read_text(encoding="utf-8")
    clicked = re.findall(r'\.connect\("clicked\(bool\)", ([^\n]+)\)', source)
    assert clicked and all("_withErrorDisplay" in handler for handler in clicked)
    assert "slicer.util.tryWithErrorDisplay" in _calls(_function("_withErrorDisplay"))
    error = _function("_onJobError")
    assert any(keyword.arg == "detailedText" for node in ast.walk(error) if isinstance(node, ast.Call) for keyword in node.keywords)
    assert "details" in ast.unparse(error)
    show = ast.unparse(_function("_showResults"))
    assert "threeDWidget(0)" in show and re.search(r"threeD = layoutManager\.threeDWidget\(0\).*\n\s+if threeD is not None", show)


def test_finding_3_and_10_dependencies_are_checked_after_installing():
    ensure = _function("ensureDependencies")
    text = ast.unparse(ensure)
    assert "slicer.pydeps" not in MODULE_FILE.read_text(encoding="utf-8")
    assert "skip_in_testing=False" in text and text.count("self.missingRequirements()") == 2  # before and after
    engine_test = (MODULE_DIR / "Testing" / "Python" / "SOPIEngineTest.py").read_text(encoding="utf-8")
    assert not re.search(r"^import torch", engine_test, re.M)


def test_finding_12_the_default_self_test_is_fast():
    run = ast.unparse(_function("runTest"))
    assert "FULL_SELF_TEST_VARIABLE" in run and "os.environ" in run
    assert "ensureDependencies" not in ast.unparse(_function("test_SOPIRegistration_widget_enables_register"))


def test_finding_15_sample_files_have_checksums_and_versioned_names():
    import hashlib

    samples = _module_constant("SAMPLE_FILES")
    folder = MODULE_DIR / "Resources" / "SampleData"
    for name, (pattern, checksum) in samples.items():
        assert checksum == "SHA256:" + hashlib.sha256((folder / name).read_bytes()).hexdigest(), f"{name}: update SAMPLE_FILES"
        assert "{}" in pattern
    assert (folder / "sample_thumbnail.png").is_file()
    assert "sample_thumbnail.png" in ast.unparse(_function("registerSampleData"))


def test_finding_14_status_labels_wrap():
    for name in ("statusLabel", "modelStatusLabel"):
        wrap = _property(_ui_widgets()[name], "wordWrap")
        assert wrap is not None and wrap.find("bool").text == "true", name
