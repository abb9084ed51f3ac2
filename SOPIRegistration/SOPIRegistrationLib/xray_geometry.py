"""The C-arm geometry of an X-ray node: a preset's distances with the node's pixels, or what an X-ray DICOM file
records (for the module's geometry fields)."""

from __future__ import annotations

from pathlib import Path

from sopi.errors import InputError
from sopi.geometry import PRESETS, CArmGeometry

from . import nodes

__all__ = ["DEFAULT_PRESET", "dicom_geometry_settings", "geometry_for_xray"]

DEFAULT_PRESET = "perlove-plx118f"


def geometry_for_xray(
    xray_node,
    preset: str = DEFAULT_PRESET,
    sdd_mm: float | None = None,
    pixel_spacing_mm: float | None = None,
    source_to_isocenter_mm: float | None = None,
) -> CArmGeometry:
    """The C-arm geometry of an X-ray node: a preset's distances, overridden where given; the
    node's size, and its spacing unless ``pixel_spacing_mm`` (mm, square pixels) is given."""
    if preset not in PRESETS:
        raise InputError(f"geometry preset {preset!r} is unknown; expected one of {sorted(PRESETS)}")
    base = PRESETS[preset]
    spacing = None if not pixel_spacing_mm else (float(pixel_spacing_mm), float(pixel_spacing_mm))
    return nodes.xray_geometry(
        xray_node, sdd_mm or base.sdd_mm, spacing, source_to_isocenter_mm or base.source_to_isocenter_mm
    )


def dicom_geometry_settings(path: str | Path) -> dict:
    """The C-arm distances and pixel spacing recorded in an X-ray DICOM file, for the GUI's
    geometry fields: ``sdd_mm``, ``source_to_isocenter_mm`` (None if absent) and
    ``pixel_spacing_mm`` (None for non-square pixels: the node's spacing is used then); and its
    ``patient_orientation`` (Patient Orientation (0020,0020), None if absent: see
    :func:`.orientation.orientation_setting`). Raises :class:`InputError` naming the file and the missing tag."""
    from sopi.io_xray import read_xray

    xray = read_xray(path)
    du, dv = xray.geometry.pixel_spacing_mm
    recorded = "distance_source_to_patient_mm" in xray.metadata
    return {
        "sdd_mm": xray.geometry.sdd_mm,
        "source_to_isocenter_mm": xray.geometry.source_to_isocenter_mm if recorded else None,
        "pixel_spacing_mm": du if abs(du - dv) <= 1e-6 * du else None,
        "patient_orientation": xray.metadata.get("patient_orientation"),
    }
