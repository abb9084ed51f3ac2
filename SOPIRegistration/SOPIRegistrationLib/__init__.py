"""The bridge between MRML nodes and the SOPI engine (``sopi``), headless.

Imports only what runs with the PyPI package ``slicer-core`` (no Qt, no application object), so
it is tested outside Slicer. ``SOPIRegistration.py`` (the Slicer module) delegates to
:class:`RegistrationLogic`. Names are imported on first use, so ``SOPIRegistrationLib.dependencies``
works before torch is installed.
"""

from importlib import import_module

_EXPORTS = {
    "DEFAULT_METHOD": "logic",
    "RegistrationLogic": "logic",
    "SceneRegistration": "logic",
    "dicom_geometry_settings": "xray_geometry",
    "geometry_for_xray": "xray_geometry",
    "EngineProcessError": "process",
    "ProcessJob": "process",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
