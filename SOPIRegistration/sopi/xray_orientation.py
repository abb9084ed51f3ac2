"""Which way an X-ray's pixels face: mirrored, upside-down or turned images brought to the C-arm's convention.

Registration assumes the detector convention of ``docs/conventions.md``: column ``x`` and row
``y`` run along the camera's x and y axes (for the nominal AP view, the patient's left towards
increasing column and the head at row 0). A radiograph exported from a C-arm may be mirrored,
upside down or turned by 90 deg on display. A mirror image is no rigid pose, and the global
search looks for in-plane turns of +-30 deg, so such an X-ray cannot register as stored.

A DICOM radiograph says which way it faces in Patient Orientation (0020,0020): two strings of
the letters L, R, A, P, H, F, the patient directions of increasing column and of increasing
row. :func:`orientation_from_tag` compares them with the camera's axes at the start pose and
finds the :class:`Orientation` (a transposition, then flips) that brings the image to them.
Files without the tag are taken as stored; ``flip`` overrides either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from .errors import InputError
from .geometry import CArmGeometry
from .io_xray import XRay

__all__ = ["FLIPS", "Orientation", "given_orientation", "matching_orientation", "orient_xray", "orientation_from_tag", "patient_direction"]

#: ``flip`` values: ``auto`` (the DICOM tag decides; as stored without it) or what the stored image is,
#: whatever the tags say: as taken (``none``), mirrored ``left-right``, ``up-down``, ``both`` (turned by 180
#: deg), turned by 90 deg clockwise (``rotated-cw``) or counter-clockwise (``rotated-ccw``) as displayed, or
#: mirrored across its ``diagonal`` (from the top-left corner: rows and columns swapped) or its ``anti-diagonal``.
#: With ``none`` these are the eight ways a rectangular image can lie.
FLIPS = ("auto", "none", "left-right", "up-down", "both", "rotated-cw", "rotated-ccw", "diagonal", "anti-diagonal")

#: Unit LPS direction of each letter of Patient Orientation (DICOM PS3.3 C.7.6.1.1.1).
_LETTERS = {"L": (1.0, 0.0, 0.0), "R": (-1.0, 0.0, 0.0), "P": (0.0, 1.0, 0.0), "A": (0.0, -1.0, 0.0), "H": (0.0, 0.0, 1.0), "F": (0.0, 0.0, -1.0)}

#: An image axis must lie within 60 deg of a camera axis (|cosine| above this) to be matched to it; an
#: image turned about 45 deg against the pose is kept as stored, with a note.
_ALIGNED = 0.5


@dataclass(frozen=True)
class Orientation:
    """What turns a stored image to the convention: transpose it (rows become columns), then mirror it
    left-right (``flip_columns``) and/or upside down (``flip_rows``). ``(False, False, False)`` keeps it."""

    transpose: bool = False
    flip_columns: bool = False
    flip_rows: bool = False

    @property
    def changes(self) -> bool:
        return self.transpose or self.flip_columns or self.flip_rows

    @classmethod
    def from_record(cls, record: dict) -> Orientation:
        """The orientation of a result's ``xray_preparation["orientation"]`` record."""
        return cls(bool(record.get("transpose", False)), bool(record["flip_columns"]), bool(record["flip_rows"]))

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """``(..., rows, cols)``: the stored image as the convention wants it."""
        if self.transpose:
            image = image.transpose(-1, -2)
        dims = [dim for dim, flip in ((-1, self.flip_columns), (-2, self.flip_rows)) if flip]
        return (image.flip(dims) if dims else image).contiguous()

    def undo(self, image: torch.Tensor) -> torch.Tensor:
        """``(..., rows, cols)``: an image in the convention (a DRR) back in the stored image's orientation."""
        dims = [dim for dim, flip in ((-1, self.flip_columns), (-2, self.flip_rows)) if flip]
        image = image.flip(dims) if dims else image
        return (image.transpose(-1, -2) if self.transpose else image).contiguous()

    def geometry(self, stored: CArmGeometry) -> CArmGeometry:
        """The detector of the turned image: the stored detector with its axes swapped and mirrored like the
        pixels (pixel centres: column ``c`` becomes ``cols - 1 - c``)."""
        geometry = stored
        if self.transpose:
            (du, dv), (cu, cv) = stored.pixel_spacing_mm, stored.principal_point_px
            geometry = replace(stored, rows=stored.cols, cols=stored.rows, pixel_spacing_mm=(dv, du), principal_point_px=(cv, cu))
        cu, cv = geometry.principal_point_px
        return replace(geometry, principal_point_px=(geometry.cols - 1 - cu if self.flip_columns else cu,
                                                     geometry.rows - 1 - cv if self.flip_rows else cv))

    def stored_from_turned(self, rows: int, cols: int) -> np.ndarray:
        """4x4 from a turned pixel's ``(column, row, slice, 1)`` to the stored image's (``rows x cols``: the turned size)."""
        flip = np.eye(4)
        if self.flip_columns:
            flip[0, 0], flip[0, 3] = -1.0, cols - 1.0
        if self.flip_rows:
            flip[1, 1], flip[1, 3] = -1.0, rows - 1.0
        swap = np.eye(4)
        if self.transpose:
            swap[:2, :2] = [[0.0, 1.0], [1.0, 0.0]]
        return swap @ flip

    def describe(self) -> str:
        done = (["transposed"] if self.transpose else []) + [name for name, flip in (("flipped left-right", self.flip_columns),
                                                                                      ("flipped up-down", self.flip_rows)) if flip]
        return " then ".join(done) if done else "kept as stored"


#: ``flip`` values other than ``auto``: the orientation that undoes what the stored image is.
_GIVEN = {
    "none": Orientation(), "left-right": Orientation(False, True, False), "up-down": Orientation(False, False, True),
    "both": Orientation(False, True, True),
    "rotated-cw": Orientation(True, False, True),  # turned back counter-clockwise: transpose, then upside down
    "rotated-ccw": Orientation(True, True, False),  # turned back clockwise: transpose, then left-right
    "diagonal": Orientation(True, False, False),  # a transposition undoes itself
    "anti-diagonal": Orientation(True, True, True),  # transpose, then turn by 180 deg
}


def given_orientation(flip: str) -> Orientation:
    """The :class:`Orientation` of a ``flip`` value other than ``auto`` (what undoes what the stored image is)."""
    if flip not in _GIVEN:
        raise InputError(f"flip {flip!r} is not one of {tuple(_GIVEN)}")
    return _GIVEN[flip]


def patient_direction(letters: str, where: str = "Patient Orientation") -> torch.Tensor:
    """Unit LPS vector of one Patient Orientation entry (``"L"``, ``"LF"`` for an oblique, ...)."""
    letters = letters.strip().upper()
    if not letters or any(letter not in _LETTERS for letter in letters):
        raise InputError(f"{where}: {letters!r} is not a patient direction; expected letters among L, R, A, P, H, F")
    vector = torch.tensor([_LETTERS[letter] for letter in letters], dtype=torch.float64).sum(dim=0)
    if float(vector.norm()) < 1e-9:
        raise InputError(f"{where}: {letters!r} names opposite directions")
    return vector / vector.norm()


def orientation_from_tag(patient_orientation: str, camera_from_world: torch.Tensor, where: str = "Patient Orientation") -> tuple[Orientation, str]:
    """The :class:`Orientation` that turns an image tagged ``patient_orientation`` (DICOM's ``"ROW\\COLUMN"``:
    the directions of increasing column and of increasing row, e.g. ``"L\\F"``) to the camera axes of
    ``camera_from_world`` (LPS), and why. Each image axis goes to the camera axis it lies closest to; an
    image turned about 45 deg against the pose matches neither and is kept as stored."""
    parts = patient_orientation.replace("/", "\\").split("\\")
    if len(parts) != 2:
        raise InputError(f"{where}: {patient_orientation!r}; expected two entries such as 'L\\F'")
    column_direction, row_direction = (patient_direction(part, where) for part in parts)
    rotation = camera_from_world.to(torch.float64)[:3, :3]  # rows: the camera's x and y axes in LPS
    orientation, cosines = matching_orientation(column_direction, row_direction, rotation[0], rotation[1])
    angles = ", ".join(f"{name} {math.degrees(math.acos(max(-1.0, min(1.0, abs(c))))):.0f} deg off" for name, c in zip(("columns", "rows"), cosines))
    if min(abs(c) for c in cosines) <= _ALIGNED:
        return Orientation(), f"Patient Orientation '{patient_orientation}' lies between the start pose's axes ({angles}): kept as stored"
    return orientation, f"Patient Orientation '{patient_orientation}' against the start pose ({angles}): {orientation.describe()}"


def matching_orientation(stored_columns, stored_rows, columns, rows) -> tuple[Orientation, tuple[float, float]]:
    """The :class:`Orientation` that turns an image whose columns and rows run along the unit vectors
    ``stored_columns`` and ``stored_rows`` so that they run along ``columns`` and ``rows`` (unit vectors in the
    same frame; tensors or arrays), and the cosines of each target axis with the stored axis it takes (negative
    where it is mirrored). Each target axis takes the stored axis it lies closest to, both together."""
    straight = (float(columns @ stored_columns), float(rows @ stored_rows))
    crossed = (float(columns @ stored_rows), float(rows @ stored_columns))  # after a transposition the stored rows run along the columns
    transpose = abs(crossed[0]) + abs(crossed[1]) > abs(straight[0]) + abs(straight[1])
    cosines = crossed if transpose else straight
    return Orientation(transpose, cosines[0] < 0, cosines[1] < 0), cosines


def orient_xray(xray: XRay, camera_from_world: torch.Tensor, flip: str = "auto") -> tuple[XRay, dict]:
    """``xray`` facing the camera axes of ``camera_from_world``, and a record of what was done.

    ``flip``: one of :data:`FLIPS`. ``auto`` follows the file's Patient Orientation
    (``xray.metadata["patient_orientation"]``) where there is one. The image, its field mask and
    the detector (size, spacing, principal point) turn together; the input is left unchanged. The
    record (``transpose``, ``flip_columns``, ``flip_rows``, ``source``, ``reason``) gives the
    :class:`Orientation` back (:meth:`Orientation.from_record`), whose :meth:`~Orientation.undo`
    brings a DRR to the file's orientation.
    """
    if flip not in FLIPS:
        raise InputError(f"flip {flip!r} is not one of {FLIPS}")
    tagged = xray.metadata.get("patient_orientation")
    if flip != "auto":
        orientation, source, reason = given_orientation(flip), "given", f"flip {flip!r} given by the caller"
    elif tagged:
        orientation, reason = orientation_from_tag(tagged, camera_from_world, f"{xray.path or 'X-ray'}: Patient Orientation (0020,0020)")
        source = "dicom"
    else:
        orientation, source, reason = Orientation(), "none", "no Patient Orientation (0020,0020): kept as stored"
    record = {"transpose": orientation.transpose, "flip_columns": orientation.flip_columns, "flip_rows": orientation.flip_rows,
              "source": source, "reason": reason}
    if not orientation.changes:
        return xray, record
    mask = None if xray.field_mask is None else orientation.apply(xray.field_mask)
    turned = XRay(orientation.apply(xray.image), orientation.geometry(xray.geometry), xray.path, {**xray.metadata, "orientation": record}, mask)
    return turned, record
