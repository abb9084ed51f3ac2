"""A second X-ray of the same patient (an AP and a lateral, say) for the module's registration.

The engine registers both jointly (``sopi register --xray X0 --geometry G0 --xray X1 --geometry
G1``, :func:`sopi.register_views`): the pose searched is the first X-ray's, the second
follows through its ``view_from_reference`` (``docs/conventions.md``, "Several views"). Here
its geometry comes from a geometry JSON that carries ``view_from_reference`` (as ``sopi
simulate --views`` writes), or from the C-arm's turn between the shots: the difference of the
DICOM primary angles (LAO positive), both shots about the same isocentre.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sopi.errors import InputError
from sopi.geometry import CArmGeometry
from sopi.io_xray import XRay

__all__ = ["SECOND_FILES", "engine_arguments", "second_view_geometry", "view_from_carm_turn", "write_second_xray"]

#: The second view's files in a job folder.
SECOND_FILES = ("xray_1.mha", "geometry_1.json")


def view_from_carm_turn(primary_turn_deg: float, source_to_isocenter_mm: float) -> torch.Tensor:
    """``view_from_reference`` (4, 4) after the C-arm turned by ``primary_turn_deg`` about the
    patient's head-foot axis through the isocentre (DICOM primary angle, LAO positive: from
    the nominal AP view, -90 gives the nominal lateral one)."""
    from sopi.views import view_from_angles

    return view_from_angles((180.0, 0.0), (180.0 + float(primary_turn_deg), 0.0), source_to_isocenter_mm, source_to_isocenter_mm)


def second_view_geometry(first: CArmGeometry, detector: CArmGeometry, primary_turn_deg: float | None = None,
                         geometry_file: str | Path | None = None) -> CArmGeometry:
    """The second X-ray's geometry: ``geometry_file`` (it must carry ``view_from_reference``; its
    detector must match the X-ray node), else ``detector`` (the node's size and spacing) placed by
    the C-arm turn ``primary_turn_deg`` about ``first``'s isocentre."""
    if geometry_file is not None and str(geometry_file) not in ("", "."):
        loaded = CArmGeometry.load(geometry_file)
        if loaded.view_from_reference is None:
            raise InputError(f"second X-ray geometry {geometry_file}: no 'view_from_reference'; expected the 4x4 map from the first "
                             "X-ray's camera frame to the second's (docs/conventions.md, 'Several views')")
        if loaded.shape != detector.shape:
            raise InputError(f"second X-ray geometry {geometry_file}: describes {loaded.shape} pixels but the second X-ray has {detector.shape}")
        return loaded
    if primary_turn_deg is None:
        raise InputError("second X-ray: give the C-arm turn between the two shots or a geometry file with view_from_reference")
    sid = first.source_to_isocenter_mm
    return detector.with_view_from_reference(view_from_carm_turn(primary_turn_deg, sid))


def write_second_xray(folder: Path, xray: XRay) -> None:
    """The second X-ray and its geometry (with ``view_from_reference``) into a job folder."""
    from sopi.io_xray import write_xray

    write_xray(folder / SECOND_FILES[0], xray.image, xray.geometry)
    xray.geometry.save(folder / SECOND_FILES[1])


def engine_arguments(method: str) -> list[str]:
    """The ``sopi register`` arguments that add the second view; a clear error for a method that registers one view."""
    from sopi.registration.multiview import multiview_methods

    if method not in multiview_methods():
        raise InputError(f"Register: {method} registers one X-ray; with a second X-ray choose one of {', '.join(multiview_methods())}")
    return ["--xray", SECOND_FILES[0], "--geometry", SECOND_FILES[1]]


def second_view_pose(result_json: dict) -> np.ndarray:
    """The second view's ``camera_from_world`` in a joint result JSON."""
    views = result_json.get("views") or []
    if len(views) < 2:
        raise InputError("the engine's result holds no second view")
    return np.asarray(views[1]["matrix"], dtype=np.float64)
