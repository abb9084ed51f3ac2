"""Several views of one patient: where each view's camera sits relative to the first.

A C-arm takes an AP and a lateral shot (or any two) of a patient who does not move.
Each view's geometry may carry ``view_from_reference``: the 4x4 rigid map (mm) from the
reference camera frame (view 0's) to this view's camera frame, so that

    camera_from_world[k] = view_from_reference[k] @ camera_from_world[0]

(see ``docs/conventions.md``, "Several views"). Without it, DICOM files give it through
PositionerPrimaryAngle (0018,1510), PositionerSecondaryAngle (0018,1511) and the
source-to-isocentre distance (:func:`camera_from_positioner`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .errors import InputError
from .geometry import CArmGeometry, invert_rigid, rigid

__all__ = ["camera_from_positioner", "view_from_angles", "views_from_reference"]


def camera_from_positioner(primary_deg: float, secondary_deg: float, source_to_isocenter_mm: float) -> torch.Tensor:
    """``camera_from_carm`` (4, 4) float64 for DICOM positioner angles (deg).

    The C-arm frame is LPS-aligned for a supine patient, origin at the isocentre. DICOM
    gives the detector's position about the patient: primary angle 0 = detector above the
    chest (beam posterior -> anterior), +90 = LAO 90 (detector at the patient's left,
    beam right -> left); secondary angle +90 = detector cranial (beam feet -> head).
    With ``a`` the primary and ``b`` the secondary angle, the camera axes in LPS are::

        z (beam, source -> detector) = ( sin a cos b, -cos a cos b,  sin b)
        y (detector rows)            = ( sin a sin b, -cos a sin b, -cos b)   head at row 0
        x (detector columns)         = (-cos a,       -sin a,        0    )   x = y cross z

    and the source sits ``source_to_isocenter_mm`` before the isocentre along ``z``. So
    primary 180 is the nominal ``ap`` view and primary 90 the nominal ``lateral`` one.
    """
    a, b = math.radians(float(primary_deg)), math.radians(float(secondary_deg))
    axes = torch.tensor(
        [
            [-math.cos(a), -math.sin(a), 0.0],
            [math.sin(a) * math.sin(b), -math.cos(a) * math.sin(b), -math.cos(b)],
            [math.sin(a) * math.cos(b), -math.cos(a) * math.cos(b), math.sin(b)],
        ],
        dtype=torch.float64,
    )  # rows: x, y, z in C-arm (LPS) coordinates
    return rigid(axes, torch.tensor([0.0, 0.0, float(source_to_isocenter_mm)], dtype=torch.float64))


def view_from_angles(
    reference_angles_deg: tuple[float, float],
    view_angles_deg: tuple[float, float],
    reference_source_to_isocenter_mm: float,
    view_source_to_isocenter_mm: float,
) -> torch.Tensor:
    """``view_from_reference`` (4, 4) float64 between two shots of one C-arm, from their
    (primary, secondary) positioner angles (deg) and source-to-isocentre distances (mm)."""
    reference = camera_from_positioner(*reference_angles_deg, reference_source_to_isocenter_mm)
    view = camera_from_positioner(*view_angles_deg, view_source_to_isocenter_mm)
    return view @ invert_rigid(reference)


def _angles(metadata: dict | None) -> tuple[float, float] | None:
    if not metadata or "primary_angle_deg" not in metadata:
        return None
    return float(metadata["primary_angle_deg"]), float(metadata.get("secondary_angle_deg", 0.0))


def views_from_reference(
    geometries: Sequence[CArmGeometry], metadata: Sequence[dict | None] | None = None, names: Sequence[str] | None = None
) -> list[torch.Tensor]:
    """``view_from_reference`` (4, 4) float64 of every view, view 0's being the identity.

    Where the geometries carry ``view_from_reference`` it is used (relative to view 0's own
    matrix when view 0 has one: ``V_k @ inverse(V_0)``); where none does and every view's
    ``metadata`` has DICOM positioner angles (``primary_angle_deg``, ``secondary_angle_deg``
    as :func:`sopi.io.read_xray` records them), they give it. ``names`` name the views in errors.
    """
    count = len(geometries)
    names = list(names) if names is not None else [f"view {index}" for index in range(count)]
    metadata = list(metadata) if metadata is not None else [None] * count
    if count == 0:
        raise InputError("views: expected at least one X-ray")
    if len(names) != count or len(metadata) != count:
        raise InputError(f"views: {count} geometries but {len(names)} names and {len(metadata)} metadata entries")
    carried = [geometry.view_from_reference is not None for geometry in geometries]
    if any(carried[1:]) or (count == 1 and carried[0]):
        missing = [names[index] for index in range(1, count) if not carried[index]]
        if missing:
            raise InputError(
                f"{', '.join(missing)}: its geometry has no view_from_reference while another view's has; "
                "expected it in every view after the first (4x4 map from view 0's camera frame)"
            )
        reference_inverse = invert_rigid(geometries[0].reference_transform())
        return [geometry.reference_transform() @ reference_inverse for geometry in geometries]
    angles = [_angles(entry) for entry in metadata]
    if count > 1 and all(angle is not None for angle in angles):
        reference = geometries[0].source_to_isocenter_mm
        return [view_from_angles(angles[0], angle, reference, geometry.source_to_isocenter_mm) for angle, geometry in zip(angles, geometries)]
    if count > 1:
        without = next((names[index] for index in range(1, count) if angles[index] is None), names[0])
        raise InputError(
            f"{without}: no view_from_reference in the geometries and no DICOM PositionerPrimaryAngle (0018,1510) "
            "to place this view; expected a geometry JSON with \"view_from_reference\" (4x4 map from view 0's "
            "camera frame to this view's) for every view after the first"
        )
    return [torch.eye(4, dtype=torch.float64)]
