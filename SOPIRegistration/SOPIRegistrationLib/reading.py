"""How the module reads an X-ray node's values: as the clinician set the polarity, or, under ``auto``, as the
registration judged them (against a DRR of the CT, with the other readings tried where that was open).

The engine wants bone bright. A polarity the clinician chose is applied here before the image goes to the engine
(:func:`sopi.io_xray.apply_polarity`); under ``auto`` the image goes as it is, the engine judges it
(:func:`sopi.registration.preparation.prepare_fixed`), and the reading it registered with is kept on the
registration's transform node, so the similarity read-out and the masked-pixel overlay read the node the same way.

An X-ray node loaded from a DICOM file loses the file's intensity tags (PixelIntensityRelationship and its sign), which
settle the polarity where ``sopi register`` reads the file itself. The module keeps the file's path on the node
(:data:`SOURCE_FILE_ATTRIBUTE`); under ``auto``, where the node still holds the values the tags describe,
:func:`file_reading` reads it as the engine reads the file, and the engine is told so instead of judging it; the file's
shutters go to the engine too (:class:`FileReading`'s ``field_mask``, ``sopi register --field-mask``), as ``sopi
register`` would read them from the file.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import nodes

__all__ = [
    "AGAINST_THE_CUES", "FIELD_MASK_FILE", "FROM_THE_FILE", "SOURCE_FILE_ATTRIBUTE", "XRAY_READING_ATTRIBUTE", "FileReading",
    "file_reading", "write_field_mask", "read_against_the_cues",
    "reading_source", "registered_reading", "result_reading", "xray_image_as_read",
]

#: On a registration's transform node: how the X-ray node's values were read (``bone-bright``, ``bone-dark`` or
#: ``intensity``), and ``XRAY_READING_ATTRIBUTE + "Source"``: who said so (the clinician, the file, the judgement).
XRAY_READING_ATTRIBUTE = "SOPIRegistration.XRayReading"


#: The source of a reading the engine took against the image's own cues: the reading they chose explained nothing
#: (``xray_preparation["polarity_against_the_cues"]``, :data:`sopi.registration.passes.NOTHING_EXPLAINED_BELOW`).
AGAINST_THE_CUES = "against the image's cues"

#: On an X-ray node: the file it was loaded from (the module sets it for an X-ray from Slicer's DICOM database; a
#: script may set it too).
SOURCE_FILE_ATTRIBUTE = "SOPIRegistration.SourceFile"

#: The source of a reading that the X-ray file's DICOM intensity tags settled (:func:`file_reading`).
FROM_THE_FILE = "the DICOM file's intensity tags"


def result_reading(polarity: str, result_json: dict) -> tuple[str, str]:
    """``(reading, source)`` of a registration of an X-ray node: the ``polarity`` the clinician chose, or under
    ``"auto"`` the engine's (``xray_preparation["polarity"]`` of the result JSON, the first view's of a two-view
    one; ``bone-bright`` where the engine recorded none: the image was used as given); the source is
    :data:`AGAINST_THE_CUES` where the engine read the image against its own cues."""
    if polarity != "auto":
        return polarity, "chosen"
    views = result_json.get("views")
    preparation = (views[0] if views else result_json).get("xray_preparation") or {}
    source = AGAINST_THE_CUES if preparation.get("polarity_against_the_cues", False) else preparation.get("polarity_source", "as given")
    return str(preparation.get("polarity", "bone-bright")), str(source)


def registered_reading(transform_node) -> str | None:
    """The reading a registration stored on its transform node (None: none, or no node)."""
    return (transform_node.GetAttribute(XRAY_READING_ATTRIBUTE) or None) if transform_node is not None else None


def reading_source(transform_node) -> str | None:
    """Who said how to read the X-ray, as a registration stored it on its transform node (None: none, or no node):
    ``"chosen"``, :data:`FROM_THE_FILE`, :data:`AGAINST_THE_CUES` or the engine's judgement."""
    return (transform_node.GetAttribute(XRAY_READING_ATTRIBUTE + "Source") or None) if transform_node is not None else None


def read_against_the_cues(transform_node) -> bool:
    """Whether a registration stored on its transform node read the X-ray against the image's cues."""
    return reading_source(transform_node) == AGAINST_THE_CUES


class FileReading(NamedTuple):
    """How to read an X-ray node as ``sopi register`` reads the DICOM file it came from (:func:`file_reading`): the
    polarity, the tags' reason, and the file's shutters (bool ``(rows, cols)``, True where the beam reached the
    detector, as :func:`sopi.io_xray.read_xray` reads them; None without any)."""

    polarity: str
    reason: str
    field_mask: np.ndarray | None


def file_reading(xray_node) -> FileReading | None:
    """How to read the X-ray node's values as ``sopi register`` reads the DICOM file it came from
    (:data:`SOURCE_FILE_ATTRIBUTE`; :func:`sopi.io_xray.settled_polarity`), with the tags' reason and the file's
    shutters. Where the node holds the values the tags describe (of the file's one frame, or of one frame of a cine: a
    sequence's frame), the reading is the engine's own; where it holds the values a GDCM-based loader shows (Slicer's
    default: a MONOCHROME1 file inverted), the opposite reading gives the engine's image up to a constant (not for LIN
    data, whose logarithm needs the values the tags describe). None where the node names no file, the file is gone or
    its tags settle nothing, or the node holds no frame's values (edited, resampled, averaged): then the engine judges
    the image."""
    from pathlib import Path

    from sopi.io_xray import settled_polarity

    path = xray_node.GetAttribute(SOURCE_FILE_ATTRIBUTE) if xray_node is not None else None
    settled = settled_polarity(path) if path and Path(path).is_file() else None
    if settled is None:
        return None
    image = nodes.xray_image_from_node(xray_node).astype(np.float64)

    def holds(frames: np.ndarray) -> bool:
        return image.shape == frames.shape[1:] and any(
            np.allclose(image, frame, rtol=0.0, atol=1e-5 * max(float(np.abs(frame).max()), 1.0)) for frame in frames)

    if holds(settled.values):
        return FileReading(settled.polarity, settled.reason, settled.field_mask)
    if settled.polarity != "intensity" and holds(settled.displayed):
        opposite = "bone-bright" if settled.polarity == "bone-dark" else "bone-dark"
        return FileReading(opposite, settled.reason + "; the node holds the values as displayed (inverted)", settled.field_mask)
    return None


#: The file in a registration's job folder that holds the X-ray's exposed field for ``sopi register --field-mask``.
FIELD_MASK_FILE = "field.mha"


def write_field_mask(folder, field_mask: np.ndarray | None, orientation, geometry) -> bool:
    """Write ``field_mask`` (a :class:`FileReading`'s), turned by ``orientation`` (as the X-ray written beside it) on
    ``geometry``, to ``folder / FIELD_MASK_FILE``; False (nothing written) for None. A failed write removes the job
    folder."""
    if field_mask is None:
        return False
    import torch

    from sopi.io_xray import write_xray

    from .jobfiles import remove_folder

    try:
        write_xray(folder / FIELD_MASK_FILE, orientation.apply(torch.from_numpy(field_mask.astype(np.float32))), geometry)
    except BaseException:
        remove_folder(folder)
        raise
    return True


def xray_image_as_read(xray_node, polarity: str, reading: str | None = None) -> np.ndarray:
    """The X-ray node's image as float64 with bone bright.

    ``polarity`` is how the clinician says bone looks in the node (:data:`sopi.io_xray.POLARITIES`); under
    ``"auto"`` the image is read as ``reading`` (:func:`sopi.xray_prep.apply_reading`, the engine's own conversion),
    and as it is before a registration has judged it (``reading`` None)."""
    image = nodes.xray_image_from_node(xray_node).astype(np.float64)
    if polarity != "auto":
        from sopi.io_xray import apply_polarity

        return apply_polarity(image, polarity, xray_node.GetName())
    if reading in (None, "bone-bright"):
        return image
    import torch

    from sopi.xray_prep import apply_reading

    return apply_reading(torch.from_numpy(image), reading).to(torch.float64).numpy()
