"""Reading and writing CT volumes, label maps and X-ray images (SimpleITK based).

World coordinates are the CT's physical LPS millimetres exactly as SimpleITK reads
them (origin, spacing and direction of the file are honoured). Every bad-input case
raises :class:`~sopi.errors.InputError` with the file name and what was expected.

X-ray images (:class:`XRay`, :func:`read_xray`, :func:`write_xray`) live in
:mod:`sopi.io_xray` and are re-exported here.

Supported volume files: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``),
MetaImage (``.mha``, ``.mhd``) and DICOM (a folder holding a series, or one file of
a series: the whole series it belongs to is read). Written volumes are
``.nii``, ``.nii.gz``, ``.nrrd`` or ``.mha`` (single file, so the write is atomic).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from .atomic import atomic_path
from .errors import InputError
from .volume import Volume, world_from_index_affine

__all__ = [
    "VOLUME_WRITE_SUFFIXES",
    "XRay",
    "mask_from_labels",
    "read_ct",
    "read_label_map",
    "read_mask",
    "read_xray",
    "write_volume",
    "write_xray",
]

#: File suffixes :func:`write_volume` accepts (single-file formats only).
VOLUME_WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")

#: Two grids are "the same" when their affines agree to this many millimetres.
_GRID_TOLERANCE_MM = 1e-4


# --------------------------------------------------------------------------- shared helpers


def file_suffix(path: str | Path) -> str:
    """Lower-case suffix, with ``.nii.gz`` kept whole."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def require_path(path: str | Path, what: str) -> Path:
    """``path`` as a :class:`Path`; :class:`InputError` if it does not exist."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found (expected {what})")
    return path


def sitk_message(error: Exception) -> str:
    """The useful part of a SimpleITK exception text."""
    text = str(error)
    if "sitk::ERROR:" in text:
        text = text.split("sitk::ERROR:", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else text)[:300]


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK's warnings on stderr for the duration (restores the previous setting)."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def read_information(path: Path, what: str, check: bool = True) -> sitk.ImageFileReader:
    """An :class:`sitk.ImageFileReader` for ``path`` with the header read; ``GetImageIO()`` names the format.
    ``check``: the file's integrity first (:func:`sopi.file_integrity.check_image_file`); False where the caller
    checks it alongside (:func:`sopi.file_integrity.checked_alongside`)."""
    from .file_integrity import check_image_file

    if check and path.is_file():
        check_image_file(path, what)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_itk():
            # Name the ImageIO explicitly so that reader.GetImageIO() tells the format.
            reader.SetImageIO(sitk.ImageFileReader.GetImageIOFromFileName(str(path)))
            reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(f"{path}: not a readable image file, expected {what} ({sitk_message(error)})") from None
    return reader


def execute(reader: sitk.ImageFileReader | sitk.ImageSeriesReader, path: Path, what: str) -> sitk.Image:
    """Run a reader, turning SimpleITK failures into :class:`InputError`."""
    try:
        with quiet_itk():
            return reader.Execute()
    except RuntimeError as error:
        raise InputError(f"{path}: could not read the voxels of {what} ({sitk_message(error)})") from None


def check_finite(array: np.ndarray, path: str | Path, what: str) -> None:
    """:class:`InputError` if ``array`` holds NaN or infinite values."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{path}: {bad} NaN or infinite value(s) in {what}; expected finite numbers")


# --------------------------------------------------------------------------- volume reading


def _dicom_series_files(folder: Path, series_uid: str | None = None) -> list[str]:
    """Files of the series ``series_uid`` in ``folder`` (default: the series with most files).

    When the folder holds several series and none was asked for, a warning names the
    series read and how to read another (pass one file of it).
    """
    with quiet_itk():
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        if series_uid is not None and series_uid in series_ids:
            series_ids = (series_uid,)
        candidates = [(uid, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))) for uid in series_ids]
    candidates = [(uid, files) for uid, files in candidates if files]
    if not candidates:
        raise InputError(f"{folder}: no DICOM series found in this folder (expected a folder of DICOM slices)")
    chosen_uid, chosen = max(candidates, key=lambda item: len(item[1]))
    if len(candidates) > 1:
        import warnings

        others = "; ".join(f"{uid or 'unnamed'} ({len(files)} files, e.g. {Path(files[0]).name})" for uid, files in candidates if uid != chosen_uid)
        warnings.warn(
            f"{folder}: holds {len(candidates)} DICOM series; reading {chosen_uid or 'the unnamed one'} "
            f"({len(chosen)} files, e.g. {Path(chosen[0]).name}). "
            f"To read another, pass one of its files instead of the folder: {others}",
            UserWarning,
            stacklevel=3,
        )
    return chosen


def _check_slice_positions(reader: sitk.ImageSeriesReader, image: sitk.Image, path: Path) -> None:
    """Refuse series whose slices are unevenly spaced or sheared (missing slices, gantry tilt)."""
    origin = np.array(image.GetOrigin())
    step = np.array(image.GetDirection()).reshape(3, 3)[:, 2] * image.GetSpacing()[2]
    worst = 0.0
    for k in range(image.GetSize()[2]):
        if not reader.HasMetaDataKey(k, "0020|0032"):
            return
        try:
            position = np.array([float(v) for v in reader.GetMetaData(k, "0020|0032").split("\\")])
        except ValueError:
            return
        worst = max(worst, float(np.abs(position - (origin + k * step)).max()))
    if worst > 0.01 * image.GetSpacing()[2] + 1e-3:
        raise InputError(
            f"{path}: DICOM slices are not evenly spaced along the slice normal (deviation {worst:.3f} mm; "
            "missing slices or gantry tilt?); expected a regular series"
        )


def _read_volume_image(path: str | Path, what: str) -> tuple[sitk.Image, Path]:
    """Read a 3D scalar image (file or DICOM series) with the shape checks shared by CTs and labels."""
    from .file_integrity import checked_alongside

    path = require_path(path, what)
    if path.is_dir():
        return _read_series(_dicom_series_files(path), path, what), path
    with checked_alongside(path, what):
        return _read_volume_file(path, what)


def _read_volume_file(path: Path, what: str) -> tuple[sitk.Image, Path]:
    """One volume file (or the DICOM series one file belongs to), its integrity checked by the caller."""
    info = read_information(path, what, check=False)
    if info.GetImageIO() == "GDCMImageIO":
        # One file of a series: read the whole series it belongs to.
        series_uid = info.GetMetaData("0020|000e").strip() if info.HasMetaDataKey("0020|000e") else ""
        try:
            files = _dicom_series_files(path.parent, series_uid)
        except InputError:
            files = []
        if str(path.resolve()) in {str(Path(name).resolve()) for name in files} and len(files) > 1:
            return _read_series(files, path, what), path
    _check_volume_header(path, info.GetDimension(), info.GetSize(), info.GetNumberOfComponents(), what)
    image = execute(info, path, what)
    _check_volume_header(path, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel(), what)
    return image, path


def _read_series(files: list[str], path: Path, what: str) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = execute(reader, path, what)
    _check_volume_header(path, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel(), what)
    _check_slice_positions(reader, image, path)
    return image


def _check_volume_header(path: Path, dimension: int, size: Sequence[int], components: int, what: str) -> None:
    if min(size, default=0) < 1:
        raise InputError(f"{path}: empty image (size {tuple(size)}); expected {what} with voxels")
    if dimension == 2 or (dimension == 3 and size[2] == 1):
        raise InputError(f"{path}: 2D image ({size[0]} x {size[1]} pixels); expected {what} (a 3D volume)")
    if dimension != 3:
        raise InputError(f"{path}: {dimension}D image of size {tuple(size)}; expected {what} (a 3D volume)")
    if components != 1:
        raise InputError(f"{path}: image has {components} components per voxel; expected {what} with scalar voxels")


def read_ct(path: str | Path) -> Volume:
    """Read a CT in Hounsfield units as a float32 :class:`Volume` (LPS mm affine).

    ``path`` is a NIfTI/NRRD/MetaImage file, a DICOM series folder (the series with
    most files is read if there are several) or one file of a DICOM series. DICOM
    rescale slope/intercept are applied by SimpleITK, so values are HU.
    """
    image, path = _read_volume_image(path, "a CT volume")
    view = sitk.GetArrayViewFromImage(image)  # the image's own buffer, read-only: checked, then copied once
    check_finite(view, path, "the CT")
    return Volume(_float32_copy(view), _affine(image))


def _float32_copy(array: np.ndarray) -> torch.Tensor:
    """A float32 tensor copy of ``array``: torch's conversion (multi-threaded; 0.04 s for a 512 x 512 x 141 int16 CT,
    where numpy's ``astype`` took 0.3 s), or numpy's for a type torch does not hold."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "not writable": the tensor only reads it, for the copy
            source = torch.from_numpy(array)
        return source.to(torch.float32, copy=True)
    except (TypeError, RuntimeError):
        return torch.from_numpy(array.astype(np.float32))


def _affine(image: sitk.Image) -> torch.Tensor:
    return world_from_index_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())


# --------------------------------------------------------------------------- label maps


def _label_tensor(array: np.ndarray, path: Path) -> torch.Tensor:
    """Integer labels: uint8 and int16 kept; other types narrowed to uint8/int16/int32 when exact."""
    if array.dtype in (np.uint8, np.int16):
        return torch.from_numpy(np.ascontiguousarray(array))
    if np.issubdtype(array.dtype, np.floating):
        check_finite(array, path, "the label map")
        if not np.array_equal(array, np.round(array)):
            raise InputError(f"{path}: label map holds non-integer values; expected integer labels")
    low, high = (float(array.min()), float(array.max()))
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return torch.from_numpy(np.ascontiguousarray(array.astype(dtype)))
    raise InputError(f"{path}: label values {low:g}..{high:g} do not fit 32-bit integers")


def same_grid(a: Volume, b: Volume, tolerance_mm: float = _GRID_TOLERANCE_MM) -> bool:
    """Whether two volumes share voxel counts and (to ``tolerance_mm``) their affine."""
    return a.grid_shape == b.grid_shape and bool(
        (a.world_from_index - b.world_from_index).abs().max() <= tolerance_mm
    )


def read_label_map(path: str | Path, reference: Volume | None = None) -> Volume:
    """Read an integer label map (0 = background) as a :class:`Volume`.

    uint8 and int16 files keep their type; other integer (or integral float) files
    become the smallest of uint8/int16/int32 holding their values.

    With ``reference``: a label map on the same grid is returned as is; one on
    another grid is resampled (nearest neighbour, 0 outside) onto the reference grid,
    using the world coordinates of both. If no label survives (the grids do not
    overlap) an :class:`InputError` names the file.
    """
    from .validate import check_label_map_content

    image, path = _read_volume_image(path, "a label map")
    labels = Volume(_label_tensor(sitk.GetArrayFromImage(image), path), _affine(image))
    check_label_map_content(labels.data, str(path))
    if reference is None or same_grid(labels, reference):
        return labels
    resampled = sitk.Resample(
        labels.to_sitk(), reference.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0.0
    )
    data = torch.from_numpy(sitk.GetArrayFromImage(resampled)).to(labels.data.dtype)
    result = Volume(data, reference.world_from_index)
    if bool(labels.data.any()) and not bool(result.data.any()):
        raise InputError(f"{path}: no labelled voxel lies inside the reference volume; expected labels for that CT")
    return result


def read_mask(path: str | Path, reference: Volume) -> Volume:
    """A uint8 0/1 mask (non-zero = inside) from a mask or label-map file, on ``reference``'s grid.

    :class:`InputError` naming the file when no voxel of it is set there.
    """
    from .validate import check_nonempty_mask

    labels = read_label_map(path, reference=reference)
    check_nonempty_mask(labels.data, str(path))
    return labels.with_data((labels.data != 0).to(torch.uint8))


def mask_from_labels(labels: Volume, label_ids: Sequence[int] | None = None) -> Volume:
    """uint8 0/1 mask of the voxels whose label is in ``label_ids`` (``None``: any non-zero label)."""
    if label_ids is None:
        mask = labels.data != 0
        wanted = "any non-zero label"
    else:
        ids = torch.as_tensor(list(label_ids), dtype=torch.int64)
        mask = torch.isin(labels.data.to(torch.int64), ids)
        wanted = f"label ids {list(label_ids)}"
    if not bool(mask.any()):
        present = torch.unique(labels.data).tolist()
        raise InputError(f"label map: no voxel has {wanted}; labels present: {present[:40]}")
    return labels.with_data(mask.to(torch.uint8))


# --------------------------------------------------------------------------- writing


def write_volume(path: str | Path, volume: Volume) -> None:
    """Write a single-channel volume (voxels, origin, spacing, direction) atomically.

    The suffix picks the format, one of :data:`VOLUME_WRITE_SUFFIXES`; ``.nii.gz`` is
    compressed, ``.nrrd``/``.mha`` are written with compression too. Bool voxels are
    written as uint8. NIfTI stores the affine in float32 (sub-micrometre rounding).
    """
    suffix = file_suffix(path)
    if suffix not in VOLUME_WRITE_SUFFIXES:
        raise InputError(f"{path}: unsupported volume file type {suffix!r}; expected one of {VOLUME_WRITE_SUFFIXES}")
    if volume.data.ndim != 3:
        raise InputError(
            f"{path}: only single-channel (K, J, I) volumes can be written, got {tuple(volume.data.shape)}"
        )
    if volume.data.dtype == torch.bool:
        volume = volume.to(torch.uint8)
    image = volume.to_sitk()
    try:
        with atomic_path(path) as temporary:
            sitk.WriteImage(image, temporary, True)
    except RuntimeError as error:
        raise InputError(f"{path}: could not write the volume ({sitk_message(error)})") from None


# The X-ray half of the module (it imports the helpers above).
def __getattr__(name: str):
    """Lazy re-export of the X-ray API (``sopi.io_xray`` imports this module's helpers)."""
    if name in ("XRay", "read_xray", "write_xray"):
        from . import io_xray

        return getattr(io_xray, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
