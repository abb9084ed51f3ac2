"""Which way an X-ray's pixels face: mirrored or upside-down images turned to the C-arm's convention.

Registration assumes the detector convention of ``docs/conventions.md``: column ``x`` and row
``y`` run along the camera's x and y axes (for the nominal AP view, the patient's left towards
increasing column and the head at row 0). A radiograph exported from a C-arm may be mirrored
or turned upside down on display, and a mirror image is no rigid pose: such an X-ray cannot
register as stored.

A DICOM radiograph says which way it faces in Patient Orientation (0020,0020): two strings of
the letters L, R, A, P, H, F, the patient directions of increasing column and of increasing
row. :func:`orientation_flips` compares them with the camera's axes at the start pose and
flips each image axis that runs the other way. Files without the tag are taken as stored;
``flip`` overrides either way.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from .errors import InputError
from .geometry import CArmGeometry
from .io_xray import XRay

__all__ = ["FLIPS", "flip_image", "flipped_geometry", "orient_xray", "orientation_flips", "patient_direction"]

#: ``flip`` values: ``auto`` (the DICOM tag decides; as stored without it) or what to do, whatever the tags say.
FLIPS = ("auto", "none", "left-right", "up-down", "both")

#: Unit LPS direction of each letter of Patient Orientation (DICOM PS3.3 C.7.6.1.1.1).
_LETTERS = {"L": (1.0, 0.0, 0.0), "R": (-1.0, 0.0, 0.0), "P": (0.0, 1.0, 0.0), "A": (0.0, -1.0, 0.0), "H": (0.0, 0.0, 1.0), "F": (0.0, 0.0, -1.0)}

#: An image axis is flipped when it runs this close to opposite the camera axis (cosine); between this and
#: its negative the image is turned by about 90 deg against the pose and is left as stored, with a note.
_OPPOSITE = -0.5


def patient_direction(letters: str, where: str = "Patient Orientation") -> torch.Tensor:
    """Unit LPS vector of one Patient Orientation entry (``"L"``, ``"LF"`` for an oblique, ...)."""
    letters = letters.strip().upper()
    if not letters or any(letter not in _LETTERS for letter in letters):
        raise InputError(f"{where}: {letters!r} is not a patient direction; expected letters among L, R, A, P, H, F")
    vector = torch.tensor([_LETTERS[letter] for letter in letters], dtype=torch.float64).sum(dim=0)
    if float(vector.norm()) < 1e-9:
        raise InputError(f"{where}: {letters!r} names opposite directions")
    return vector / vector.norm()


def orientation_flips(patient_orientation: str, camera_from_world: torch.Tensor, where: str = "Patient Orientation") -> tuple[bool, bool, str]:
    """``(flip columns, flip rows, why)`` that turn an image tagged ``patient_orientation`` (DICOM's
    ``"ROW\\COLUMN"``, e.g. ``"L\\F"``) to the camera axes of ``camera_from_world`` (LPS). An axis more than
    60 deg off both ways (an image turned by 90 deg) is not flipped, and ``why`` says so."""
    parts = [part for part in patient_orientation.replace("/", "\\").split("\\")]
    if len(parts) != 2:
        raise InputError(f"{where}: {patient_orientation!r}; expected two entries such as 'L\\F'")
    rotation = camera_from_world.to(torch.float64)[:3, :3]
    cosines = [float(rotation[axis] @ patient_direction(part, where)) for axis, part in enumerate(parts)]
    flips = [cosine < _OPPOSITE for cosine in cosines]
    turned = [abs(cosine) <= -_OPPOSITE for cosine in cosines]
    angles = ", ".join(f"{name} {math.degrees(math.acos(max(-1.0, min(1.0, c)))):.0f} deg" for name, c in zip(("columns", "rows"), cosines))
    if any(turned):
        return False, False, f"Patient Orientation '{patient_orientation}' is turned about 90 deg from the start pose ({angles}): kept as stored"
    done = [name for name, flip in zip(("left-right", "up-down"), flips) if flip]
    action = f"flipped {' and '.join(done)}" if done else "kept as stored"
    return flips[0], flips[1], f"Patient Orientation '{patient_orientation}' against the start pose ({angles}): {action}"


def flip_image(image: torch.Tensor, columns: bool, rows: bool) -> torch.Tensor:
    """``(..., rows, cols)`` ``image`` mirrored left-right (``columns``) and/or upside down (``rows``); its own inverse."""
    dims = [dim for dim, flip in ((-1, columns), (-2, rows)) if flip]
    return image.flip(dims) if dims else image


def orient_xray(xray: XRay, camera_from_world: torch.Tensor, flip: str = "auto") -> tuple[XRay, dict]:
    """``xray`` facing the camera axes of ``camera_from_world``, and a record of what was done.

    ``flip``: one of :data:`FLIPS`. ``auto`` follows the file's Patient Orientation
    (``xray.metadata["patient_orientation"]``) where there is one. The image, its field mask and
    the principal point are flipped together (pixel centres: column ``c`` becomes ``cols - 1 - c``);
    the input is left unchanged. The record (``flip_columns``, ``flip_rows``, ``source``, ``reason``)
    is what :func:`flip_image` needs to bring an image back to the file's orientation.
    """
    if flip not in FLIPS:
        raise InputError(f"flip {flip!r} is not one of {FLIPS}")
    tagged = xray.metadata.get("patient_orientation")
    if flip != "auto":
        columns, rows = flip in ("left-right", "both"), flip in ("up-down", "both")
        source, reason = "given", f"flip {flip!r} given by the caller"
    elif tagged:
        columns, rows, reason = orientation_flips(tagged, camera_from_world, f"{xray.path or 'X-ray'}: Patient Orientation (0020,0020)")
        source = "dicom"
    else:
        columns, rows, source, reason = False, False, "none", "no Patient Orientation (0020,0020): kept as stored"
    record = {"flip_columns": columns, "flip_rows": rows, "source": source, "reason": reason}
    if not (columns or rows):
        return xray, record
    mask = None if xray.field_mask is None else flip_image(xray.field_mask, columns, rows)
    oriented = XRay(flip_image(xray.image, columns, rows).contiguous(), flipped_geometry(xray.geometry, columns, rows), xray.path,
                    {**xray.metadata, "orientation": record}, mask)
    return oriented, record


def flipped_geometry(geometry: CArmGeometry, columns: bool, rows: bool) -> CArmGeometry:
    """The detector of an image flipped as :func:`flip_image` flips it: the principal point mirrored
    (pixel centres, column ``c`` becomes ``cols - 1 - c``); its own inverse."""
    cu, cv = geometry.principal_point_px
    return replace(geometry, principal_point_px=(geometry.cols - 1 - cu if columns else cu, geometry.rows - 1 - cv if rows else cv))
