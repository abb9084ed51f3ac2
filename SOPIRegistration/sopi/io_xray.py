"""X-ray images: :class:`XRay`, :func:`read_xray`, :func:`write_xray` (re-exported by :mod:`sopi.io`).

Image arrays are ``[row, col]`` float32 with **bone bright**: larger numbers where the
beam was attenuated more (attenuation line integrals for our DRRs).

Polarity (``read_xray(polarity=...)``) refers to the pixel values *as displayed*:
SimpleITK (ITK >= 5.1) already converts DICOM ``MONOCHROME1`` pixels (minimum shown
white) to ``MONOCHROME2`` on read (``v -> 2**BitsStored - 1 - v``), so every reader
output has "larger = whiter on screen". A standard radiograph shows bone white, hence:

* ``"auto"`` / ``"bone-bright"``: keep the values (DICOM: after the photometric
  interpretation was applied, so MONOCHROME1 and MONOCHROME2 radiographs both come out
  bone-bright; non-DICOM files are assumed bone-bright, like our DRRs).
* ``"bone-dark"``: the image shows bone dark; values become ``max - value``.
* ``"intensity"``: raw detector intensities ``I = I0 exp(-line integral)``; values
  become ``-log(I / I0)`` with ``I0`` = the image maximum (``I`` floored at ``1e-6 I0``).

Under ``"auto"``, DICOM files with PixelIntensityRelationship (0028,1040) LIN/LOG or
PixelIntensityRelationshipSign (0028,1041) are decided from those tags instead (LIN data
become line integrals); the table is in :mod:`sopi.dicom_xray`, and the metadata says
what was decided and why (``polarity_applied``, ``polarity_values``, ``polarity_reason``).
Without such tags ``"auto"`` keeps the values (content-based detection is
:func:`sopi.xray_prep.detect_polarity`'s job). An explicit polarity always wins.

DICOM RescaleSlope/RescaleIntercept (0028,1053/1052) are applied (by SimpleITK/GDCM).
Multi-frame files (XA/RF cine) need ``frame=`` (an index or ``"mean"``). Shutters and
collimators (ShutterShape (0018,1600), CollimatorShape (0018,1700)) give
:attr:`XRay.field_mask`, True where the detector was exposed.

Geometry: an explicit ``geometry`` wins; otherwise DICOM tags
(DistanceSourceToDetector (0018,1110), ImagerPixelSpacing (0018,1164) else
PixelSpacing (0028,0030), DistanceSourceToIsocenter (0018,9402) else DistanceSourceToPatient
(0018,1111) as ``source_to_isocenter_mm``), or the geometry that :func:`write_xray` embeds in
``.mha``/``.nrrd`` files. PNG/TIFF/JPEG and other files need a geometry JSON or preset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .atomic import atomic_path
from .dicom_xray import auto_polarity, check_frame, choose_frame, field_mask, intensity_values, rescale
from .dicom_xray import tag_floats as _tag_floats
from .errors import InputError
from .geometry import CArmGeometry
from .io import check_finite, execute, file_suffix, read_information, require_path, sitk_message

__all__ = [
    "MAX_WORKING_PX", "POLARITIES", "XRay", "apply_polarity", "binned_detector", "read_field_mask", "read_xray", "resize_image", "SettledPolarity", "settled_polarity", "working_xray",
    "write_xray",
]

#: Registration works on X-rays at most this many pixels on their longest side (:func:`working_xray`). No stage
#: samples the detector finer than a 256-pixel one: a 2560-pixel radiograph took 21.8 s to register as read
#: (13 s of it preparing the full image) and 12 s binned, with its overlay (docs/benchmarks.md).
MAX_WORKING_PX = 512

#: Accepted values of ``read_xray(polarity=...)``.
POLARITIES = ("auto", "bone-bright", "bone-dark", "intensity")

_FLOAT_SUFFIXES = (".mha", ".nrrd", ".nii", ".nii.gz")
_BITMAP_SUFFIXES = (".png", ".tif", ".tiff")
_EMBEDDED_SUFFIXES = (".mha", ".nrrd")
#: Metadata key under which :func:`write_xray` stores the geometry JSON.
GEOMETRY_KEY = "sopi_geometry"
#: ITU-R BT.601 luma weights for RGB -> grey.
_LUMA = np.array([0.299, 0.587, 0.114])
#: ITK >= 5.1 converts MONOCHROME1 pixels to MONOCHROME2 when reading DICOM (ITK PR #1370).
_ITK_CONVERTS_MONOCHROME1 = (sitk.Version.ITKMajorVersion(), sitk.Version.ITKMinorVersion()) >= (5, 1)
_NEED_GEOMETRY = (
    "give the C-arm geometry: a geometry JSON file (--geometry FILE.json) or a named one (--preset perlove-plx118f); "
    "in Python, read_xray(path, geometry=...)"
)
#: DICOM modalities of cross-sectional images, which are never a projection X-ray.
_NOT_XRAY_MODALITIES = {"CT": "a CT slice", "MR": "an MR slice", "PT": "a PET slice", "NM": "a nuclear-medicine image", "US": "an ultrasound image", "SEG": "a segmentation"}


@dataclass
class XRay:
    """One X-ray image and the detector geometry that describes its pixels.

    Attributes:
        image: ``(rows, cols)`` float32, bone bright.
        geometry: detector geometry with ``geometry.shape == image.shape``.
        path: the file it was read from, if any.
        metadata: e.g. ``modality``, ``photometric_interpretation``, ``primary_angle_deg``,
            ``secondary_angle_deg`` (DICOM positioner angles, degrees), ``polarity`` (as
            asked), ``polarity_applied``, ``polarity_values``, ``polarity_reason`` (what was
            done and why), ``rescale_slope``/``rescale_intercept``, ``number_of_frames`` and
            ``frame`` (multi-frame files), ``field_mask_source`` (the shutter shapes used),
            ``geometry_source`` (``"argument"``, ``"dicom"`` or ``"embedded"``), ``file_shape``,
            ``patient_orientation`` (DICOM's ``"ROW\\COLUMN"`` directions, e.g. ``"L\\F"``; see
            :mod:`sopi.xray_orientation`).
        field_mask: bool ``(rows, cols)``, True where the detector was exposed (DICOM
            shutters/collimators); ``None`` when the file says nothing about it.
    """

    image: torch.Tensor
    geometry: CArmGeometry
    path: str | None = None
    metadata: dict = field(default_factory=dict)
    field_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 2 or tuple(self.image.shape) != self.geometry.shape:
            raise InputError(
                f"{self.path or 'x-ray'}: image shape {tuple(self.image.shape)} does not match the geometry's "
                f"{self.geometry.shape} (rows, cols)"
            )
        if self.field_mask is not None and (
            self.field_mask.dtype != torch.bool or tuple(self.field_mask.shape) != tuple(self.image.shape)
        ):
            raise InputError(
                f"{self.path or 'x-ray'}: field_mask must be bool {tuple(self.image.shape)} like the image, "
                f"got {self.field_mask.dtype} {tuple(self.field_mask.shape)}"
            )


# --------------------------------------------------------------------------- reading


def read_xray(
    path: str | Path,
    geometry: CArmGeometry | None = None,
    polarity: str = "auto",
    working_shape: tuple[int, int] | None = None,
    frame: int | str | None = None,
) -> XRay:
    """Read a 2D X-ray (DICOM DX/CR/XA/RF, MHA/NRRD/NIfTI, PNG/TIFF/JPEG) as a bone-bright :class:`XRay`.

    Args:
        path: the image file. 3D files are accepted if they hold a single slice, or with
            ``frame``. RGB(A) bitmaps are converted to grey with BT.601 luma weights (alpha dropped).
        geometry: geometry of the *file's* pixels; its ``rows, cols`` must equal the
            image size (a binned geometry is an error: describe the file, then ask for
            ``working_shape``).
        polarity: one of :data:`POLARITIES` (see the module docstring); under ``"auto"``
            DICOM intensity tags decide (the case table is in :mod:`sopi.dicom_xray`).
        working_shape: ``(rows, cols)`` to resample to (area averaging for integer
            factors, antialiased bilinear otherwise); the geometry is ``resized`` to match,
            and ``field_mask`` too (a pixel stays exposed when more than half its area was).
        frame: for multi-frame files (XA/RF cine, or a 3D stack): the frame index (0-based,
            negative counts from the end) or ``"mean"`` to average all frames. ``None``
            (the default) refuses a file with several frames, saying how many.
    """
    if polarity not in POLARITIES:
        raise InputError(f"polarity {polarity!r} is not one of {POLARITIES}")
    path = require_path(path, "an X-ray image")
    check_frame(frame, path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected a single X-ray image file")
    reader = read_information(path, "an X-ray image")
    is_dicom = reader.GetImageIO() == "GDCMImageIO"
    size = reader.GetSize()
    if reader.GetDimension() > 3:
        raise InputError(f"{path}: image of size {size} has {reader.GetDimension()} dimensions; expected a 2D X-ray (one frame)")
    tags = {key: reader.GetMetaData(key).strip() for key in reader.GetMetaDataKeys()}
    modality = tags.get("0008|0060", "").upper() if is_dicom else ""
    if modality in _NOT_XRAY_MODALITIES:
        raise InputError(
            f"{path}: DICOM Modality {modality}: {_NOT_XRAY_MODALITIES[modality]}; expected a projection X-ray (DX, CR, XA or RF)"
        )
    frames = size[2] if reader.GetDimension() == 3 else 1
    chosen = choose_frame(frame, frames, path, is_dicom)
    components = reader.GetNumberOfComponents()
    if components != 1 and (is_dicom or components not in (3, 4)):
        raise InputError(f"{path}: image has {components} components per pixel; expected a greyscale X-ray")
    itk_image = execute(reader, path, "an X-ray image")
    stack = sitk.GetArrayViewFromImage(itk_image).reshape((frames, size[1], size[0], components))
    array = stack.mean(axis=0, dtype=np.float64) if chosen == "mean" else stack[chosen].astype(np.float64)
    del stack, itk_image
    metadata: dict = {"format": reader.GetImageIO()}
    if frames > 1 or frame is not None:
        metadata["number_of_frames"], metadata["frame"] = frames, chosen
    if components != 1:
        array = array[..., :3] @ _LUMA
        metadata["converted_from_rgb"] = True
    array = array.reshape(array.shape[:2])
    check_finite(array, path, "the X-ray")
    rows, cols = array.shape
    metadata["file_shape"] = (rows, cols)
    if is_dicom:
        metadata.update(_dicom_metadata(tags))
        modality_values, array = intensity_values(array, tags, _ITK_CONVERTS_MONOCHROME1, path)
        if tags.get("0028|1053") or tags.get("0028|1052"):
            metadata["rescale_slope"], metadata["rescale_intercept"] = rescale(tags, path)
        decided = auto_polarity(modality_values, tags, path) if polarity == "auto" else None
        mask, notes = field_mask(tags, rows, cols, path)
        if notes:
            metadata["field_mask_source"] = notes
    else:
        decided, mask = None, None

    if geometry is not None:
        metadata["geometry_source"] = "argument"
    elif is_dicom:
        geometry, metadata["geometry_source"] = _dicom_geometry(tags, rows, cols, path), "dicom"
    elif GEOMETRY_KEY in tags:
        geometry, metadata["geometry_source"] = _embedded_geometry(tags[GEOMETRY_KEY], path), "embedded"
    else:
        raise InputError(f"{path}: this file carries no C-arm geometry; {_NEED_GEOMETRY}")
    if geometry.shape != (rows, cols):
        raise InputError(
            f"{path}: image is {rows}x{cols} pixels (rows x cols) but the geometry describes "
            f"{geometry.rows}x{geometry.cols}; expected a geometry with the file's rows and cols "
            "(describe the detector as stored; binning happens after reading)"
        )

    if polarity != "auto":
        values, applied, used, reason = array, polarity, "displayed", "given by the caller"
    elif decided is not None:
        values, applied, used, reason = decided
    else:
        values, applied, used = array, "bone-bright", "displayed"
        reason = "no DICOM intensity tags (0028,1040/1041): values kept" + (
            f" ({metadata['photometric_interpretation']} applied)" if metadata.get("photometric_interpretation") else ""
        )
    image = torch.from_numpy(apply_polarity(values, applied, path).astype(np.float32))
    metadata.update(polarity=polarity, polarity_applied=applied, polarity_values=used, polarity_reason=reason)
    metadata["polarity_settled"] = polarity != "auto" or decided is not None  # else registration may judge it
    exposed = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))
    if working_shape is not None:
        rows_out, cols_out = (int(n) for n in working_shape)
        if rows_out < 1 or cols_out < 1:
            raise InputError(f"working_shape must be two positive integers, got {working_shape!r}")
        image = resize_image(image, (rows_out, cols_out))
        geometry = geometry.resized(rows_out, cols_out)
        if exposed is not None:
            exposed = resize_image(exposed.to(torch.float32), (rows_out, cols_out)) > 0.5
    return XRay(image.contiguous(), geometry, str(path), metadata, exposed)


class SettledPolarity(NamedTuple):
    """What a DICOM X-ray's intensity tags settle (:func:`settled_polarity`), frame by frame: ``apply_polarity(values[k],
    polarity)`` is :func:`read_xray`'s image of frame ``k`` under ``"auto"``; ``displayed[k]`` are the values
    SimpleITK/GDCM returns for it (MONOCHROME1 inverted over the stored range); both ``(frames, rows, cols)`` float64.
    ``field_mask``: :func:`read_xray`'s :attr:`XRay.field_mask` of the file (its shutters; None without any)."""

    values: np.ndarray
    displayed: np.ndarray
    polarity: str
    reason: str
    field_mask: np.ndarray | None = None


def settled_polarity(path: str | Path) -> SettledPolarity | None:
    """What :func:`read_xray` under ``"auto"`` decides from a DICOM X-ray's intensity tags, with the values of every
    frame it applies it to (the modality values, or the values inverted over the stored range for LIN data that fall
    with intensity) and the values a GDCM-based reader shows; None where the file is not a greyscale DICOM image or its
    tags settle nothing (:func:`sopi.dicom_xray.auto_polarity`).

    For an image that came from the file by another road (a Slicer node loaded from it, one frame of a cine): where its
    values are one frame's ``values``, this is how to read it as ``sopi register`` reads that frame."""
    path = require_path(path, "an X-ray image")
    reader = read_information(path, "an X-ray image")
    if reader.GetImageIO() != "GDCMImageIO" or reader.GetNumberOfComponents() != 1 or reader.GetDimension() > 3:
        return None
    size = reader.GetSize()
    frames = size[2] if reader.GetDimension() == 3 else 1
    tags = {key: reader.GetMetaData(key).strip() for key in reader.GetMetaDataKeys()}
    stack = sitk.GetArrayFromImage(execute(reader, path, "an X-ray image")).reshape(frames, size[1], size[0]).astype(np.float64)
    modality, displayed = intensity_values(stack, tags, _ITK_CONVERTS_MONOCHROME1, path)
    decided = auto_polarity(modality, tags, path)
    if decided is None:
        return None
    return SettledPolarity(decided[0], displayed, decided[1], decided[3], field_mask(tags, size[1], size[0], path)[0])


def read_field_mask(path: str | Path, shape: tuple[int, int], what: str = "--field-mask") -> torch.Tensor:
    """Bool ``(rows, cols)`` from a 2D image file of ``shape`` (the X-ray file's): True where it is not 0, the pixels the
    beam reached (inside the collimator or the image intensifier's field)."""
    expected = f"{what}: an image of the exposed field"
    path = require_path(path, expected)
    reader = read_information(path, expected)
    stored = sitk.GetArrayFromImage(execute(reader, path, expected))
    array = stored.squeeze()
    if reader.GetNumberOfComponents() != 1 or array.ndim != 2:
        raise InputError(f"{what} {path}: expected one 2D greyscale image (non-zero where the beam reached the detector), "
                         f"got {reader.GetNumberOfComponents()} component(s) of shape {stored.shape}")
    if tuple(array.shape) != tuple(shape):
        raise InputError(f"{what} {path}: is {array.shape[0]}x{array.shape[1]} pixels (rows x cols); expected the X-ray's "
                         f"{shape[0]}x{shape[1]}")
    mask = torch.from_numpy(np.ascontiguousarray(array != 0))
    if not bool(mask.any()):
        raise InputError(f"{what} {path}: no pixel is exposed (every pixel is 0); expected non-zero where the beam reached the detector")
    return mask


def apply_polarity(array: np.ndarray, polarity: str, path: str | Path) -> np.ndarray:
    """Make bone bright (see the module docstring); ``path`` names the image in errors."""
    if polarity not in POLARITIES:
        raise InputError(f"{path}: polarity {polarity!r} is not one of {POLARITIES}")
    if polarity == "bone-dark":
        return array.max() - array
    if polarity == "intensity":
        i0 = float(array.max())
        if i0 <= 0:
            raise InputError(f"{path}: polarity 'intensity' needs positive detector values (max is {i0:g})")
        return -np.log(np.maximum(array, 1e-6 * i0) / i0)
    return array


def working_xray(xray: XRay, max_px: int | None = None) -> tuple[XRay, int]:
    """``xray`` on the same physical detector with at most ``max_px`` (default :data:`MAX_WORKING_PX`) pixels
    on its longest side, and the factor it was binned by (1: returned as it is).

    The image is binned by the smallest integer factor that fits (:func:`resize_image`: block means,
    antialiased where the size is not a multiple), the geometry resampled with it
    (:meth:`CArmGeometry.resized`), and a field mask keeps a coarse pixel only where all of it was exposed.
    A pose found on the result holds for the original: the detector is the same.
    """
    rows, cols = xray.image.shape
    geometry, factor = binned_detector(xray.geometry, MAX_WORKING_PX if max_px is None else max_px)
    if factor <= 1:
        return xray, 1
    shape = geometry.shape
    mask = xray.field_mask
    if mask is not None:
        mask = resize_image(mask.to(torch.float32), shape) > 1.0 - 1e-6
    metadata = {**xray.metadata, "binned_by": factor, "file_shape": xray.metadata.get("file_shape", (rows, cols))}
    return XRay(resize_image(xray.image, shape), geometry, xray.path, metadata, mask), factor


def binned_detector(geometry: CArmGeometry, max_px: int) -> tuple[CArmGeometry, int]:
    """``geometry`` resampled by the smallest integer factor that leaves at most ``max_px`` pixels on its longest
    side (the same physical detector, :meth:`CArmGeometry.resized`), and that factor (1: unchanged)."""
    factor = -(-max(geometry.rows, geometry.cols) // max_px)
    if factor <= 1:
        return geometry, 1
    return geometry.resized(-(-geometry.rows // factor), -(-geometry.cols // factor)), factor


def resize_image(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Resample a ``(rows, cols)`` image to ``shape`` on the same physical extent.

    Integer down-sampling factors average pixel blocks (binning); other factors use
    antialiased bilinear interpolation. Pixel centres follow :meth:`CArmGeometry.resized`.
    """
    rows, cols = image.shape
    out_rows, out_cols = shape
    if (rows, cols) == (out_rows, out_cols):
        return image
    batch = image[None, None].to(torch.float32)
    if rows % out_rows == 0 and cols % out_cols == 0:
        result = F.avg_pool2d(batch, kernel_size=(rows // out_rows, cols // out_cols))
    else:
        result = F.interpolate(batch, size=(out_rows, out_cols), mode="bilinear", align_corners=False, antialias=True)
    return result[0, 0].to(image.dtype)


def _dicom_metadata(tags: dict[str, str]) -> dict:
    names = {
        "0008|0060": "modality",
        "0028|0004": "photometric_interpretation",
        "0018|5101": "view_position",
        "0028|1040": "pixel_intensity_relationship",
        "0028|1041": "pixel_intensity_relationship_sign",
        "2050|0020": "presentation_lut_shape",
        "0020|0020": "patient_orientation",
    }
    metadata = {name: tags[key] for key, name in names.items() if tags.get(key)}
    for key, name in (("0018|1510", "primary_angle_deg"), ("0018|1511", "secondary_angle_deg")):
        values = _tag_floats(tags, key)
        if values:
            metadata[name] = values[0]
    for key, name in (("0018|1111", "distance_source_to_patient_mm"), ("0018|9402", "distance_source_to_isocenter_mm")):
        values = _tag_floats(tags, key)
        if values:
            metadata[name] = values[0]
    return metadata


def _dicom_geometry(tags: dict[str, str], rows: int, cols: int, path: Path) -> CArmGeometry:
    """Geometry from DICOM tags; DICOM spacing tags list (row spacing, column spacing)."""
    sdd = _tag_floats(tags, "0018|1110")
    if not sdd or sdd[0] <= 0:
        raise InputError(f"{path}: DICOM lacks DistanceSourceToDetector (0018,1110); {_NEED_GEOMETRY}")
    spacing = None
    for key in ("0018|1164", "0028|0030"):
        values = _tag_floats(tags, key)
        if values and len(values) == 2 and min(values) > 0:
            spacing = values
            break
    if spacing is None:
        found = {key: tags[key] for key in ("0018|1164", "0028|0030") if key in tags}
        raise InputError(
            f"{path}: DICOM has no usable ImagerPixelSpacing (0018,1164) or PixelSpacing (0028,0030) "
            f"(found {found or 'neither'}); {_NEED_GEOMETRY}"
        )
    source_to_isocenter = None
    for key in ("0018|9402", "0018|1111"):  # DistanceSourceToIsocenter, else DistanceSourceToPatient
        distance = _tag_floats(tags, key)
        if distance and 0 < distance[0] < sdd[0]:
            source_to_isocenter = distance[0]
            break
    try:
        return CArmGeometry(sdd[0], rows, cols, (spacing[1], spacing[0]), source_to_isocenter_mm=source_to_isocenter)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def _embedded_geometry(text: str, path: Path) -> CArmGeometry:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: embedded '{GEOMETRY_KEY}' is not valid JSON ({error}); {_NEED_GEOMETRY}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: embedded '{GEOMETRY_KEY}' is not a JSON object; {_NEED_GEOMETRY}")
    return CArmGeometry.from_dict(data, source=f"{path} ({GEOMETRY_KEY})")


# --------------------------------------------------------------------------- writing


def write_xray(
    path: str | Path,
    image: torch.Tensor,
    geometry: CArmGeometry,
    *,
    window: tuple[float, float] | None = None,
) -> None:
    """Write a ``(rows, cols)`` X-ray atomically.

    * ``.mha``, ``.nrrd``, ``.nii``, ``.nii.gz``: float32 2D image, spacing ``(du, dv)`` mm,
      origin 0, identity direction; ``.mha``/``.nrrd`` also embed the geometry JSON
      (metadata key :data:`GEOMETRY_KEY`) so :func:`read_xray` needs no geometry for them.
      Reading back gives the same array.
    * ``.png``, ``.tif``, ``.tiff``: 8-bit greyscale for viewing; ``window = (low, high)``
      maps linearly to 0..255 (clipped), default the image's ``(min, max)``; a constant
      image is written as zeros.
    """
    suffix = file_suffix(path)
    if suffix not in _FLOAT_SUFFIXES + _BITMAP_SUFFIXES:
        expected = _FLOAT_SUFFIXES + _BITMAP_SUFFIXES
        raise InputError(f"{path}: unsupported X-ray file type {suffix!r}; expected one of {expected}")
    array = image.detach().to(torch.float32).cpu().numpy()
    if array.ndim != 2 or array.shape != geometry.shape:
        raise InputError(
            f"{path}: image shape {array.shape} does not match the geometry's {geometry.shape} (rows, cols)"
        )
    check_finite(array, path, "the X-ray to write")
    if suffix in _FLOAT_SUFFIXES:
        output = sitk.GetImageFromArray(array)
        output.SetSpacing(geometry.pixel_spacing_mm)
        if suffix in _EMBEDDED_SUFFIXES:
            output.SetMetaData(GEOMETRY_KEY, json.dumps(geometry.to_dict()))
    else:
        low, high = (float(array.min()), float(array.max())) if window is None else (float(window[0]), float(window[1]))
        scaled = np.zeros_like(array) if high <= low else np.clip((array - low) / (high - low), 0.0, 1.0)
        output = sitk.GetImageFromArray(np.round(scaled * 255.0).astype(np.uint8))
    try:
        with atomic_path(path) as temporary:
            sitk.WriteImage(output, temporary, suffix in (".mha", ".nrrd", ".nii.gz"))
    except RuntimeError as error:
        raise InputError(f"{path}: could not write the X-ray ({sitk_message(error)})") from None
