"""Pose distances against scipy, geomstats and analytic values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from sopi.distances import (
    double_geodesic_mm,
    geodesic_se3,
    mean_projection_distance_mm,
    mtre_mm,
    paper_errors,
    rotation_angle_deg,
    se3_log,
    so3_log,
    translation_error_mm,
)
from sopi.geometry import CArmGeometry, nominal_view, rigid


def random_poses(count: int, seed: int, max_angle: float = np.pi) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(count, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = rng.uniform(0, max_angle, size=(count, 1))
    rotations = torch.from_numpy(Rotation.from_rotvec(axes * angles).as_matrix())
    return rigid(rotations, torch.from_numpy(rng.normal(scale=50.0, size=(count, 3))))


def test_so3_log_matches_scipy_including_near_pi_and_identity():
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(50, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi, 44), [0.0, 1e-9, np.pi - 1e-7, np.pi - 1e-3, 3.0, 1e-5]])
    rotvecs = axes * angles[:, None]
    matrices = torch.from_numpy(Rotation.from_rotvec(rotvecs).as_matrix())
    ours = so3_log(matrices).numpy()
    assert np.allclose(ours, rotvecs, atol=1e-6)


def test_se3_log_inverts_the_matrix_exponential():
    poses = random_poses(40, seed=1, max_angle=3.0)
    twist = se3_log(poses)
    algebra = torch.zeros(40, 4, 4, dtype=torch.float64)
    w = twist[:, :3]
    algebra[:, 0, 1], algebra[:, 0, 2], algebra[:, 1, 2] = -w[:, 2], w[:, 1], -w[:, 0]
    algebra[:, 1, 0], algebra[:, 2, 0], algebra[:, 2, 1] = w[:, 2], -w[:, 1], w[:, 0]
    algebra[:, :3, 3] = twist[:, 3:]
    assert torch.allclose(torch.linalg.matrix_exp(algebra), poses, atol=1e-9)


def test_geodesics_match_geomstats():
    geomstats_backend = pytest.importorskip("geomstats.backend")
    from geomstats.geometry.special_euclidean import SpecialEuclidean
    from geomstats.geometry.special_orthogonal import SpecialOrthogonal

    a, b = random_poses(25, seed=2, max_angle=2.5), random_poses(25, seed=3, max_angle=2.5)
    se3 = SpecialEuclidean(n=3, equip=True)
    so3 = SpecialOrthogonal(n=3, equip=True)
    expected_se3 = np.array([float(se3.metric.dist(geomstats_backend.array(x.numpy()), geomstats_backend.array(y.numpy()))) for x, y in zip(a, b)])
    expected_so3 = np.array([float(so3.metric.dist(geomstats_backend.array(x[:3, :3].numpy()), geomstats_backend.array(y[:3, :3].numpy()))) for x, y in zip(a, b)])
    assert np.allclose(geodesic_se3(a, b).numpy(), expected_se3, rtol=1e-6)
    assert np.allclose(np.deg2rad(rotation_angle_deg(a, b).numpy()), expected_so3, rtol=1e-6)


def test_translation_errors_and_mtre_analytic():
    pose = nominal_view("ap", torch.tensor([10.0, 20.0, 30.0]), 675.0).camera_from_world
    shifted = pose.clone()
    shifted[:3, 3] += torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    points = torch.randn(100, 3, dtype=torch.float64) * 40
    assert float(translation_error_mm(pose, shifted)) == pytest.approx(5.0)
    assert float(mtre_mm(pose, shifted, points)) == pytest.approx(5.0)
    # rotation by 90 deg about the pivot: the pivot does not move, a point r away moves r*sqrt(2)
    pivot = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    turn = torch.eye(4, dtype=torch.float64)
    turn[:3, :3] = torch.from_numpy(Rotation.from_rotvec([0, 0, np.pi / 2]).as_matrix())
    about_pivot = torch.eye(4, dtype=torch.float64)
    about_pivot[:3, 3] = pivot
    rotated = pose @ about_pivot @ turn @ torch.linalg.inv(about_pivot)
    assert float(translation_error_mm(pose, rotated, pivot)) == pytest.approx(0.0, abs=1e-9)
    assert float(rotation_angle_deg(pose, rotated)) == pytest.approx(90.0)
    target = pivot + torch.tensor([7.0, 0.0, 0.0], dtype=torch.float64)
    assert float(mtre_mm(pose, rotated, target[None])) == pytest.approx(7.0 * np.sqrt(2))
    assert float(double_geodesic_mm(pose, rotated, radius_mm=100.0)) == pytest.approx(
        float(np.hypot(100.0 * np.pi / 2, float(translation_error_mm(pose, rotated))))
    )


def test_projection_distance_of_an_in_plane_shift_is_magnified():
    geometry = CArmGeometry(1000.0, 128, 128, (1.0, 1.0), source_to_isocenter_mm=600.0)
    nominal = nominal_view("ap", torch.zeros(3, dtype=torch.float64), 600.0)
    shifted = nominal.pose(torch.tensor([0, 0, 0, 2.0, 0, 0], dtype=torch.float64))
    isocenter = torch.zeros(1, 3, dtype=torch.float64)
    assert float(mean_projection_distance_mm(nominal.camera_from_world, shifted, geometry, isocenter)) == pytest.approx(2.0 * 1000.0 / 600.0)


def test_paper_errors_sum_absolute_components_and_wrap_angles():
    estimate = torch.tensor([179.0, 1.0, -2.0, 1.0, 2.0, -3.0], dtype=torch.float64)
    truth = torch.tensor([-179.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    rotation, translation = paper_errors(estimate, truth)
    assert float(rotation) == pytest.approx(2.0 + 1.0 + 2.0)
    assert float(translation) == pytest.approx(6.0)
