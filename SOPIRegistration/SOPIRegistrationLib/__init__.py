"""The bridge between MRML nodes and the SOPI engine (``sopi``), headless.

Imports only what runs with the PyPI package ``slicer-core`` (no Qt, no application object), so
it is tested outside Slicer. ``SOPIRegistration.py`` (the Slicer module) delegates to
:class:`RegistrationLogic`.
"""

from .logic import DEFAULT_METHOD, RegistrationLogic, SceneRegistration, dicom_geometry_settings, geometry_for_xray
from .worker import BackgroundJob

__all__ = ["DEFAULT_METHOD", "BackgroundJob", "RegistrationLogic", "SceneRegistration", "dicom_geometry_settings", "geometry_for_xray"]
