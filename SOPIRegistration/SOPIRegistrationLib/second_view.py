"""A second X-ray of the same patient (an AP and a lateral, say) for the module's registration.

The engine registers both jointly (``sopi register --xray X0 --geometry G0 --xray X1 --geometry
G1``, :func:`sopi.register_views`): the pose searched is the first X-ray's, the second
follows through its ``view_from_reference`` (``docs/conventions.md``, "Several views"). Here
its geometry comes from a geometry JSON that carries ``view_from_reference`` (as ``sopi
simulate --views`` writes), or from the C-arm's turn between the shots: the difference of the
DICOM primary angles (LAO positive), both shots about the same isocentre.

After the registration the transform node keeps the second view (its geometry and
``SecondViewFromFirst``, the engine's ``view_from_reference``), so that the pose sliders move
both views: the second DRR is rendered at ``view_from_reference @ camera_from_world`` and
stays on the second X-ray node (:func:`render_second_drr`), and the 3D view shows the second
C-arm where it stood relative to the first (:func:`second_scene_from_camera`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sopi.errors import InputError
from sopi.geometry import CArmGeometry
from sopi.io_xray import XRay

__all__ = [
    "SECOND_FILES", "engine_arguments", "forget_second_view", "has_second_view", "render_second_drr", "second_camera_from_world", "second_scene_from_camera",
    "second_view_geometry", "second_view_pose", "store_second_view", "stored_second_view", "view_from_carm_turn", "write_second_xray",
]

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


# --------------------------------------------------------------------------- after the registration: both views follow the pose

_PREFIX = "SOPIRegistration."


def store_second_view(transform_node, geometry: CArmGeometry, result_json: dict, xray_node) -> np.ndarray:
    """Keep the second view on the registration's transform node: its geometry, its X-ray node and
    ``SecondViewFromFirst`` (the engine's ``view_from_reference``: its pose over the first's in
    ``result_json``). Returns that 4x4 matrix."""
    import json

    first = np.asarray(result_json["matrix"], dtype=np.float64)
    view_from_first = second_view_pose(result_json) @ np.linalg.inv(first)
    transform_node.SetAttribute(_PREFIX + "SecondGeometry", json.dumps(geometry.to_dict()))
    transform_node.SetAttribute(_PREFIX + "SecondViewFromFirst", " ".join(repr(float(value)) for value in view_from_first.ravel()))
    transform_node.SetNodeReferenceID(_PREFIX + "SecondXRay", xray_node.GetID())
    return view_from_first


def forget_second_view(transform_node) -> None:
    """Remove what :func:`store_second_view` kept (a single-view registration into the same node)."""
    for name in ("SecondGeometry", "SecondViewFromFirst"):
        transform_node.RemoveAttribute(_PREFIX + name)
    transform_node.RemoveNodeReferenceIDs(_PREFIX + "SecondXRay")


def has_second_view(transform_node) -> bool:
    """Whether ``transform_node`` holds a two-view registration."""
    return transform_node is not None and bool(transform_node.GetAttribute(_PREFIX + "SecondViewFromFirst"))


def stored_second_view(transform_node) -> tuple[CArmGeometry, np.ndarray]:
    """The second view's geometry and ``view_from_reference`` (4x4) a two-view registration stored."""
    import json

    geometry_text = transform_node.GetAttribute(_PREFIX + "SecondGeometry") if transform_node is not None else None
    matrix_text = transform_node.GetAttribute(_PREFIX + "SecondViewFromFirst") if transform_node is not None else None
    if not geometry_text or not matrix_text:
        name = transform_node.GetName() if transform_node is not None else "no transform"
        raise InputError(f"{name!r} holds no two-view registration; register with a second X-ray first")
    matrix = np.array([float(value) for value in matrix_text.split()], dtype=np.float64).reshape(4, 4)
    return CArmGeometry.from_dict(json.loads(geometry_text), source=transform_node.GetName()), matrix


def second_camera_from_world(lib, transform_node) -> np.ndarray:
    """The second view's ``camera_from_world`` at the node's current pose (the sliders'): it follows the first's."""
    _, view_from_first = stored_second_view(transform_node)
    return view_from_first @ lib.camera_from_world(transform_node)


def second_scene_from_camera(lib, transform_node) -> np.ndarray:
    """``scene_from_camera`` of the second C-arm in the scene the registration set up for the first
    (whose detector is at the first X-ray node, and where the CT is placed under the transform):
    ``scene_from_camera_first @ inverse(view_from_reference)``. The C-arms stay; the CT moves with the pose."""
    _, view_from_first = stored_second_view(transform_node)
    _, scene_from_camera = lib.registration_geometry(transform_node)
    return scene_from_camera @ np.linalg.inv(view_from_first)


def render_second_drr(lib, ct_node, transform_node, xray_node, drr_node=None, binning: int = 1, step_mm: float = 1.0, device: str = "cpu"):
    """Render the second view's DRR at the node's current pose into ``drr_node`` (new if None),
    on ``xray_node`` (the second X-ray) so that the two fuse; ``binning`` > 1 renders a coarser detector."""
    from sopi.render import render_drr

    from . import frames, nodes

    geometry, _ = stored_second_view(transform_node)
    pose = torch.from_numpy(second_camera_from_world(lib, transform_node))
    scene_from_camera = frames.scene_from_camera_for_xray(nodes.node_ras_from_ijk(xray_node), geometry.sdd_mm, geometry.principal_point_px)
    geometry = lib.drawn_detector(geometry, binning)
    image = render_drr(lib._rendering_volume(ct_node), geometry, pose, step_mm=step_mm * max(1, binning), device=device)
    return lib._drr_to_node(image.numpy(), geometry, scene_from_camera, drr_node, f"{xray_node.GetName()} DRR")
