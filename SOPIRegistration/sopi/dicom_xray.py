"""DICOM projection X-rays (DX, CR, XA, RF) as they come, for :func:`sopi.io_xray.read_xray`.

Three things a DICOM radiograph or fluoroscopy file carries beyond its pixels:

**Intensities.** SimpleITK/GDCM (ITK 5.4, checked for the DX, CR, XA and RF storage
classes in ``tests/test_dicom_xray.py``) returns ``stored * RescaleSlope +
RescaleIntercept`` (0028,1053/1052), and for ``MONOCHROME1`` first inverts the stored value
over its range (``v -> vmax + vmin - v``, ``vmin..vmax`` from BitsStored and
PixelRepresentation). :func:`intensity_values` undoes the inversion, giving the
*modality values* ``m = v * slope + intercept`` (what the intensity tags describe) and
the *displayed values* ``d`` (larger = whiter on screen: ``m`` for MONOCHROME2, the
inverted ``m`` for MONOCHROME1; this is what SimpleITK returns).

Under ``polarity="auto"`` :func:`auto_polarity` decides from PixelIntensityRelationship
(0028,1040) and PixelIntensityRelationshipSign (0028,1041), whose sign describes the
stored values: +1 = larger values mean *more* X-ray intensity (bone dark in ``m``), -1 =
larger values mean *less* intensity (bone bright in ``m``). With a negative rescale slope
the direction in ``m`` is flipped (``k = sign * sign(slope)``). The photometric
interpretation only says how to *display* the values, so once the intensity tags are
known it plays no part:

=============  ==========  ==============  ==========================================  ===================
relationship   sign ``k``  photometric     result (bone bright)                        values used
=============  ==========  ==============  ==========================================  ===================
LIN            +1          either          ``-log(m / max m)`` (line integrals, air 0)  modality
LIN            -1          either          ``-log(I / max I)``, ``I = m_top - m``        modality, inverted
LOG            +1          either          ``max m - m``                                modality
LOG            -1          either          ``m`` (kept)                                 modality
LIN/LOG        absent      either          as ``k = +1`` (DICOM defines LIN/LOG as      modality
                                           growing with beam intensity)
absent, DISP,  +1 / -1     either          like LOG with that sign (no log applied)     modality
OTHER
DISP, OTHER,   absent      MONOCHROME2     ``d = m`` (kept; today's behaviour)          displayed
absent                     MONOCHROME1     ``d`` = ``m`` inverted over the stored       displayed
                                           range (bone white on screen = bright)
=============  ==========  ==============  ==========================================  ===================

``m_top`` is the largest modality value the stored range can hold (zero intensity for a
LIN image whose values fall with intensity). LOG data keep their own units (the log base
and gain are unknown); LIN data become natural-log line integrals with ``I0`` = the
image's largest intensity. An explicit ``polarity`` (not ``"auto"``) always wins and acts
on the displayed values, exactly as before (see :mod:`sopi.io_xray`).

**Frames.** Multi-frame files (XA/RF cine, NumberOfFrames (0028,0008) > 1) need
``frame=``: an index (negative counts from the end) or ``"mean"`` (the average of all
frames, taken before the polarity so LIN frames average intensities).

**Shutters.** :func:`field_mask` turns the Display Shutter module (ShutterShape
(0018,1600): RECTANGULAR, CIRCULAR, POLYGONAL, several combined) and the X-Ray Collimator
module (CollimatorShape (0018,1700), same shapes) into a bool ``(rows, cols)`` mask, True
where the detector was exposed: the intersection of every shape. Coordinates are DICOM's
1-based pixel ``row``/``column``: the top-left pixel is row 1, column 1. A rectangle keeps
columns ``left..right`` and rows ``upper..lower`` (edges included); a circle keeps pixels
whose centre is within the radius of the centre (row, column); a polygon (row, column
vertices, closed) keeps pixels whose centre is inside or on an edge. BITMAP shutters
(overlay planes) are not read; they are recorded in the metadata and ignored.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["auto_polarity", "choose_frame", "field_mask", "intensity_values", "tag_floats"]

_INTENSITY_TAG = "0028|1040"
_SIGN_TAG = "0028|1041"
_SLOPE_TAG, _INTERCEPT_TAG = "0028|1053", "0028|1052"
_FRAMES_TAG = "0028|0008"

#: Display Shutter and X-Ray Collimator modules: shape tag and the tags of each shape.
_SHUTTER_MODULES = {
    "Shutter": {
        "shape": ("ShutterShape", "0018|1600"),
        "left": ("ShutterLeftVerticalEdge", "0018|1602"),
        "right": ("ShutterRightVerticalEdge", "0018|1604"),
        "upper": ("ShutterUpperHorizontalEdge", "0018|1606"),
        "lower": ("ShutterLowerHorizontalEdge", "0018|1608"),
        "center": ("CenterOfCircularShutter", "0018|1610"),
        "radius": ("RadiusOfCircularShutter", "0018|1612"),
        "vertices": ("VerticesOfThePolygonalShutter", "0018|1620"),
    },
    "Collimator": {
        "shape": ("CollimatorShape", "0018|1700"),
        "left": ("CollimatorLeftVerticalEdge", "0018|1702"),
        "right": ("CollimatorRightVerticalEdge", "0018|1704"),
        "upper": ("CollimatorUpperHorizontalEdge", "0018|1706"),
        "lower": ("CollimatorLowerHorizontalEdge", "0018|1708"),
        "center": ("CenterOfCircularCollimator", "0018|1710"),
        "radius": ("RadiusOfCircularCollimator", "0018|1712"),
        "vertices": ("VerticesOfThePolygonalCollimator", "0018|1720"),
    },
}


def _name(keyword: str, key: str) -> str:
    """``Keyword (gggg,eeee)`` for messages."""
    return f"{keyword} ({key.replace('|', ',').upper()})"


def tag_floats(tags: dict[str, str], key: str) -> list[float] | None:
    """Numbers of a multi-valued DICOM tag, or ``None`` when absent or not numeric."""
    try:
        values = [float(v) for v in tags[key].split("\\")]
    except (KeyError, ValueError):
        return None
    return values if values and all(math.isfinite(v) for v in values) else None


def _numbers(tags: dict[str, str], keyword: str, key: str, count: int | None, path: Path, what: str) -> list[float]:
    """The numbers of a tag that must be there (``count`` of them, or an even number >= 6 when ``None``)."""
    text = tags.get(key, "").strip()
    if not text:
        raise InputError(f"{path}: {what} needs {_name(keyword, key)}, which is missing or empty")
    values = tag_floats(tags, key)
    if values is None:
        raise InputError(f"{path}: {_name(keyword, key)} is {text!r}; expected numbers")
    if count is not None and len(values) != count:
        raise InputError(f"{path}: {_name(keyword, key)} is {text!r}; expected {count} number(s)")
    if count is None and (len(values) % 2 or len(values) < 6):
        raise InputError(f"{path}: {_name(keyword, key)} is {text!r}; expected row\\column pairs of at least 3 vertices")
    return values


# --------------------------------------------------------------------------- intensities


def rescale(tags: dict[str, str], path: Path) -> tuple[float, float]:
    """``(RescaleSlope, RescaleIntercept)``, ``(1, 0)`` where absent."""
    result = []
    for keyword, key, default in (("RescaleSlope", _SLOPE_TAG, 1.0), ("RescaleIntercept", _INTERCEPT_TAG, 0.0)):
        if not tags.get(key, "").strip():
            result.append(default)
            continue
        values = tag_floats(tags, key)
        if values is None or len(values) != 1:
            raise InputError(f"{path}: {_name(keyword, key)} is {tags[key]!r}; expected one number")
        result.append(values[0])
    if result[0] == 0:
        raise InputError(f"{path}: {_name('RescaleSlope', _SLOPE_TAG)} is 0; expected a non-zero number")
    return result[0], result[1]


def stored_range(tags: dict[str, str]) -> tuple[float, float]:
    """``(vmin, vmax)`` of the stored values (BitsStored (0028,0101), PixelRepresentation (0028,0103))."""
    bits = tag_floats(tags, "0028|0101") or tag_floats(tags, "0028|0100") or [16.0]
    signed = (tag_floats(tags, "0028|0103") or [0.0])[0] == 1
    bits_stored = int(bits[0])
    return (-(2.0 ** (bits_stored - 1)), 2.0 ** (bits_stored - 1) - 1) if signed else (0.0, 2.0**bits_stored - 1)


def intensity_values(array: np.ndarray, tags: dict[str, str], itk_inverts: bool, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(modality, displayed)`` values from SimpleITK's array (see the module docstring).

    ``itk_inverts``: whether the reader already inverted MONOCHROME1 pixels (ITK >= 5.1).
    """
    if tags.get("0028|0004", "").strip().upper() != "MONOCHROME1":
        return array, array
    slope, intercept = rescale(tags, path)
    vmin, vmax = stored_range(tags)
    total = (vmin + vmax) * slope + 2.0 * intercept  # m + d for every pixel
    return (total - array, array) if itk_inverts else (array, total - array)


def auto_polarity(modality: np.ndarray, tags: dict[str, str], path: Path) -> tuple[np.ndarray, str, str, str] | None:
    """The ``polarity="auto"`` decision from the intensity tags (see the module docstring).

    Returns ``(values, polarity, values_used, reason)``: ``values`` are what
    :func:`sopi.io_xray.apply_polarity` gets with ``polarity``. ``None`` when the tags
    say nothing usable (then the displayed values are kept).
    """
    relationship = tags.get(_INTENSITY_TAG, "").strip().upper()
    sign_text = tags.get(_SIGN_TAG, "").strip()
    relationship_name = _name("PixelIntensityRelationship", _INTENSITY_TAG)
    sign_name = _name("PixelIntensityRelationshipSign", _SIGN_TAG)
    if sign_text:
        values = tag_floats(tags, _SIGN_TAG)
        if values is None or len(values) != 1 or values[0] not in (1.0, -1.0):
            raise InputError(f"{path}: {sign_name} is {sign_text!r}; expected 1 or -1")
        sign = int(values[0])
    else:
        sign = None
    if relationship not in ("LIN", "LOG") and sign is None:
        return None
    slope, intercept = rescale(tags, path)
    direction = (sign if sign is not None else 1) * (1 if slope > 0 else -1)
    if sign is None:
        reason = f"{relationship_name} {relationship}, {sign_name} absent: taken as +1 (values grow with X-ray intensity)"
    elif relationship in ("LIN", "LOG"):
        reason = f"{relationship_name} {relationship}, {sign_name} {sign:+d}"
    else:
        shown = f"{relationship!r}" if relationship else "absent"
        reason = f"{sign_name} {sign:+d}, {relationship_name} {shown}: direction only, no log conversion"
    if slope < 0:
        reason += ", negative RescaleSlope flips it"
    if relationship == "LIN":
        if direction > 0:
            return modality, "intensity", "modality", reason + ": intensities -> -log(I / I0)"
        vmin, vmax = stored_range(tags)
        top = max(vmin * slope + intercept, vmax * slope + intercept)
        return top - modality, "intensity", "modality, inverted", reason + ": intensities (top of the stored range - value) -> -log(I / I0)"
    if direction > 0:
        return modality, "bone-dark", "modality", reason + ": larger values = more X-ray intensity (bone dark) -> max - value"
    return modality, "bone-bright", "modality", reason + ": larger values = less X-ray intensity (bone bright) -> kept"


# --------------------------------------------------------------------------- frames


def check_frame(frame: int | str | None, path: str | Path = "x-ray") -> None:
    """Refuse a ``frame`` argument that is neither ``None``, an index nor ``"mean"``."""
    if frame is None or (isinstance(frame, str) and frame == "mean"):
        return
    if isinstance(frame, (bool, np.bool_)) or not isinstance(frame, (int, np.integer)):
        raise InputError(f"{path}: frame {frame!r} is not a frame index (0, 1, ..., or -1 for the last) or 'mean'")


def choose_frame(frame: int | str | None, count: int, path: Path, is_dicom: bool) -> int | str:
    """The frame to read of ``count``: a non-negative index or ``"mean"``.

    ``frame``: an index (negative from the end), ``"mean"``, or ``None`` (refused when
    there are several frames, with a message saying how to choose).
    """
    check_frame(frame, path)
    where = " (NumberOfFrames (0028,0008))" if is_dicom else ""
    if frame is None:
        if count == 1:
            return 0
        raise InputError(
            f"{path}: holds {count} frames{where}; expected a 2D X-ray (one frame): choose one with "
            f"--frame INDEX (0..{count - 1}, -1 = the last) or --frame mean to average them (in Python: read_xray(path, frame=0))"
        )
    if isinstance(frame, str):
        return "mean"
    index = int(frame)
    if not -count <= index < count:
        raise InputError(f"{path}: frame {index} is out of range: the file holds {count} frame(s){where}, indices 0..{count - 1}")
    return index % count


# --------------------------------------------------------------------------- shutters


def field_mask(tags: dict[str, str], rows: int, cols: int, path: Path) -> tuple[np.ndarray | None, list[str]]:
    """The exposed field from the shutter and collimator tags (see the module docstring).

    Returns ``(mask, notes)``: ``mask`` is bool ``(rows, cols)`` or ``None`` without any
    shutter; ``notes`` lists the shapes used (and ignored) for the metadata.
    """
    row_index, col_index = np.meshgrid(np.arange(1, rows + 1, dtype=np.float64), np.arange(1, cols + 1, dtype=np.float64), indexing="ij")
    mask: np.ndarray | None = None
    notes: list[str] = []
    for module, names in _SHUTTER_MODULES.items():
        keyword, key = names["shape"]
        text = tags.get(key, "").strip()
        if not text:
            continue
        for shape in (s.strip().upper() for s in text.split("\\") if s.strip()):
            what = f"{_name(keyword, key)} {shape}"
            if shape == "BITMAP":
                notes.append(f"{what} ignored (overlay bitmaps are not read)")
                continue
            if shape == "RECTANGULAR":
                left, right, upper, lower = (
                    _numbers(tags, *names[side], 1, path, what)[0] for side in ("left", "right", "upper", "lower")
                )
                if left > right or upper > lower:
                    raise InputError(
                        f"{path}: {what} has left {left:g} > right {right:g} or upper {upper:g} > lower {lower:g} "
                        f"({_name(*names['left'])} .. {_name(*names['lower'])})"
                    )
                inside = (col_index >= left) & (col_index <= right) & (row_index >= upper) & (row_index <= lower)
            elif shape == "CIRCULAR":
                centre_row, centre_col = _numbers(tags, *names["center"], 2, path, what)
                radius = _numbers(tags, *names["radius"], 1, path, what)[0]
                if radius <= 0:
                    raise InputError(f"{path}: {_name(*names['radius'])} is {radius:g}; expected a positive radius in pixels")
                inside = (row_index - centre_row) ** 2 + (col_index - centre_col) ** 2 <= radius**2 * (1 + 1e-12)
            elif shape == "POLYGONAL":
                vertices = np.asarray(_numbers(tags, *names["vertices"], None, path, what)).reshape(-1, 2)
                inside = _inside_polygon(row_index, col_index, vertices)
            else:
                raise InputError(f"{path}: {_name(keyword, key)} has {shape!r}; expected RECTANGULAR, CIRCULAR, POLYGONAL or BITMAP")
            notes.append(what)
            mask = inside if mask is None else mask & inside
    if mask is not None and not mask.any():
        raise InputError(f"{path}: the shutters ({', '.join(notes)}) leave no pixel exposed; check the shutter tags")
    return mask, notes


def _inside_polygon(rows: np.ndarray, cols: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule for points ``(rows, cols)``; points on an edge count as inside."""
    inside = np.zeros(rows.shape, dtype=bool)
    on_edge = np.zeros(rows.shape, dtype=bool)
    scale = max(1.0, float(np.abs(vertices).max()))
    for (r1, c1), (r2, c2) in zip(vertices, np.roll(vertices, -1, axis=0)):
        crosses = (r1 > rows) != (r2 > rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = c1 + (rows - r1) * (c2 - c1) / (r2 - r1)
        inside ^= crosses & (cols < at)
        length2 = (r2 - r1) ** 2 + (c2 - c1) ** 2
        t = np.clip(((rows - r1) * (r2 - r1) + (cols - c1) * (c2 - c1)) / length2, 0.0, 1.0) if length2 > 0 else 0.0
        distance2 = (rows - (r1 + t * (r2 - r1))) ** 2 + (cols - (c1 + t * (c2 - c1))) ** 2
        on_edge |= distance2 <= (1e-9 * scale) ** 2
    return inside | on_edge
