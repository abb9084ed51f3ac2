"""Which way an X-ray node's image faces, for the module's *X-ray orientation* setting.

A volume node carries no DICOM Patient Orientation, so the clinician says what the X-ray is
against the C-arm's convention (``docs/conventions.md``); :mod:`sopi.xray_orientation` turns it.
The registration keeps the setting on its transform node, so later renders (the pose sliders)
turn the same way.
"""

from __future__ import annotations

import numpy as np

from sopi.errors import InputError
from sopi.geometry import nominal_view
from sopi.xray_orientation import FLIPS, Orientation, given_orientation, matching_orientation, orientation_from_tag

from . import nodes

__all__ = ["ORIENTATION_ATTRIBUTE", "XRAY_ORIENTATIONS", "orientation_between", "orientation_setting", "stored_orientation", "xray_orientation"]

#: The module's settings: :data:`sopi.xray_orientation.FLIPS` without ``auto``.
XRAY_ORIENTATIONS = tuple(flip for flip in FLIPS if flip != "auto")
#: The transform node attribute that keeps a registration's setting.
ORIENTATION_ATTRIBUTE = "SOPIRegistration.XrayFlip"


def xray_orientation(flip: str) -> Orientation:
    """The :class:`~sopi.xray_orientation.Orientation` of a setting; a one-line error for an unknown one."""
    if flip not in XRAY_ORIENTATIONS:
        raise InputError(f"X-ray orientation {flip!r} is not one of {XRAY_ORIENTATIONS}")
    return given_orientation(flip)


def stored_orientation(transform_node) -> Orientation:
    """The orientation a registration stored on its transform node (as stored before there was one)."""
    return xray_orientation(transform_node.GetAttribute(ORIENTATION_ATTRIBUTE) or "none")


def orientation_between(xray_node, drr_node) -> Orientation:
    """How a DRR node's pixels are turned against the X-ray node's (a DRR drawn for a turned X-ray):
    each DRR axis goes to the X-ray axis it runs along, mirrored where it runs the other way."""
    xray_axes, drr_axes = nodes.node_ras_from_ijk(xray_node)[:3, :2], nodes.node_ras_from_ijk(drr_node)[:3, :2]
    xray_axes = xray_axes / np.linalg.norm(xray_axes, axis=0)
    drr_axes = drr_axes / np.linalg.norm(drr_axes, axis=0)
    return matching_orientation(xray_axes[:, 0], xray_axes[:, 1], drr_axes[:, 0], drr_axes[:, 1])[0]


def orientation_setting(patient_orientation: str, view: str) -> tuple[str, str]:
    """The module's setting for an X-ray tagged ``patient_orientation`` (DICOM's ``"ROW\\COLUMN"``, e.g. ``"R\\F"``)
    registered from the nominal ``view``, and why. Every orientation the tag can give has a setting (the eight ways
    an image can lie)."""
    orientation, reason = orientation_from_tag(patient_orientation, nominal_view(view, (0.0, 0.0, 0.0), 1.0).camera_from_world)
    return next(name for name in XRAY_ORIENTATIONS if given_orientation(name) == orientation), reason
