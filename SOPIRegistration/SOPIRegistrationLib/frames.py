"""Frames of the Slicer scene, and the one place where RAS meets the engine's LPS.

Pure numpy (no Slicer import), so the conventions are testable anywhere. The conventions
are documented in ``docs/conventions.md`` ("Slicer scene"):

* The engine's world is the CT node's own RAS (its ``IJKToRAS``, parent transforms
  ignored), turned into LPS: ``world_lps = LPS_FROM_RAS @ ct_ras``.
* The **scene frame** places the C-arm in Slicer's world: the detector plane is where the
  X-ray volume node is (its column and row axes are the camera's ``+x`` and ``+y``), and
  the source sits ``sdd_mm`` in front of the principal point along ``x × y``.
  ``scene_from_camera`` maps camera millimetres to scene RAS millimetres.
* An output **transform node** holds ``scene_ras_from_ct_ras`` as its ``ToParent`` matrix:
  placing the CT under it puts the CT where the registered C-arm saw it, in front of the
  X-ray image. ``scene_ras_from_ct_ras = scene_from_camera @ camera_from_world @ LPS_FROM_RAS``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LPS_FROM_RAS",
    "RAS_FROM_LPS",
    "camera_from_world_from_transform",
    "default_scene_from_camera",
    "detector_ras_from_ijk",
    "params_from_pose",
    "pose_from_params",
    "scene_from_camera_for_xray",
    "transform_from_camera_from_world",
]

#: diag(-1, -1, 1, 1): its own inverse.
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
LPS_FROM_RAS = RAS_FROM_LPS

_ORTHOGONALITY_TOLERANCE = 1e-4


def _unit(vector: np.ndarray, what: str) -> tuple[np.ndarray, float]:
    length = float(np.linalg.norm(vector))
    if not np.isfinite(length) or length <= 0:
        raise ValueError(f"{what}: zero or non-finite axis in the image-to-RAS matrix")
    return vector / length, length


def scene_from_camera_for_xray(
    xray_ras_from_ijk: np.ndarray, sdd_mm: float, principal_point_px: tuple[float, float]
) -> np.ndarray:
    """``scene_from_camera`` (4x4, RAS mm from camera mm) with the detector at the X-ray node.

    Args:
        xray_ras_from_ijk: the X-ray node's 4x4 ``IJKToRAS`` (in world, parent transform included).
        sdd_mm: source-to-detector distance.
        principal_point_px: ``(cu, cv)`` in the node's pixels.
    """
    matrix = np.asarray(xray_ras_from_ijk, dtype=np.float64)
    x_axis, _ = _unit(matrix[:3, 0], "X-ray node")
    y_axis, _ = _unit(matrix[:3, 1], "X-ray node")
    if abs(float(x_axis @ y_axis)) > _ORTHOGONALITY_TOLERANCE:
        raise ValueError("X-ray node: its column and row axes are not perpendicular; expected an undistorted detector grid")
    z_axis = np.cross(x_axis, y_axis)
    principal = matrix @ np.array([principal_point_px[0], principal_point_px[1], 0.0, 1.0])
    scene_from_camera = np.eye(4)
    scene_from_camera[:3, 0], scene_from_camera[:3, 1], scene_from_camera[:3, 2] = x_axis, y_axis, z_axis
    scene_from_camera[:3, 3] = principal[:3] - float(sdd_mm) * z_axis
    return scene_from_camera


def default_scene_from_camera() -> np.ndarray:
    """Without an X-ray node: the camera frame itself (source at the RAS origin, beam along +S)."""
    return np.eye(4)


def detector_ras_from_ijk(
    scene_from_camera: np.ndarray,
    sdd_mm: float,
    pixel_spacing_mm: tuple[float, float],
    principal_point_px: tuple[float, float],
) -> np.ndarray:
    """``IJKToRAS`` of an image on the detector plane (column ``i``, row ``j``, slice ``k`` along the beam)."""
    du, dv = (float(s) for s in pixel_spacing_mm)
    cu, cv = (float(c) for c in principal_point_px)
    camera_from_ijk = np.array(
        [[du, 0.0, 0.0, -cu * du], [0.0, dv, 0.0, -cv * dv], [0.0, 0.0, 1.0, float(sdd_mm)], [0.0, 0.0, 0.0, 1.0]]
    )
    return np.asarray(scene_from_camera, dtype=np.float64) @ camera_from_ijk


def transform_from_camera_from_world(camera_from_world: np.ndarray, scene_from_camera: np.ndarray) -> np.ndarray:
    """The transform node's ``ToParent`` matrix, ``scene_ras_from_ct_ras``."""
    return np.asarray(scene_from_camera, np.float64) @ np.asarray(camera_from_world, np.float64) @ LPS_FROM_RAS


def camera_from_world_from_transform(scene_ras_from_ct_ras: np.ndarray, scene_from_camera: np.ndarray) -> np.ndarray:
    """Inverse of :func:`transform_from_camera_from_world`: the engine's ``camera_from_world``."""
    return np.linalg.inv(np.asarray(scene_from_camera, np.float64)) @ np.asarray(scene_ras_from_ct_ras, np.float64) @ RAS_FROM_LPS


def _view(reference_camera_from_world: np.ndarray, pivot_world: np.ndarray):
    """The engine's :class:`sopi.geometry.NominalView` about ``reference``, pivoting about ``pivot_world``."""
    import torch

    from sopi.geometry import NominalView

    return NominalView(torch.as_tensor(reference_camera_from_world, dtype=torch.float64), torch.as_tensor(pivot_world, dtype=torch.float64))


def pose_from_params(reference_camera_from_world: np.ndarray, pivot_world: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``camera_from_world`` for the paper's parameters ``theta`` (deg, mm) about ``reference``,
    pivoting about ``pivot_world`` (LPS mm): the pose sliders."""
    import torch

    return _view(reference_camera_from_world, pivot_world).pose(torch.as_tensor(theta, dtype=torch.float64)).numpy()


def params_from_pose(reference_camera_from_world: np.ndarray, pivot_world: np.ndarray, camera_from_world: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pose_from_params`."""
    import torch

    return _view(reference_camera_from_world, pivot_world).params(torch.as_tensor(camera_from_world, dtype=torch.float64)).numpy()
