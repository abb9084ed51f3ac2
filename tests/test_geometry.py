"""Coordinate conventions: intrinsics, projection, nominal views, paper parameters, files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sopi.errors import InputError
from sopi.geometry import (
    RAS_FROM_LPS,
    CArmGeometry,
    euler_from_rotation,
    invert_rigid,
    load_pose,
    nominal_view,
    paper_matrix,
    paper_params,
    project_points,
    rigid,
    rotation_from_euler,
    save_pose,
)

GEOMETRY = CArmGeometry.preset("perlove-plx118f")


def random_theta(generator: torch.Generator, count: int) -> torch.Tensor:
    angles = (torch.rand(count, 3, generator=generator, dtype=torch.float64) - 0.5) * 160.0  # |ry| < 90
    shifts = (torch.rand(count, 3, generator=generator, dtype=torch.float64) - 0.5) * 100.0
    return torch.cat([angles, shifts], dim=1)


def test_intrinsics_match_the_documented_formula():
    geometry = CArmGeometry(1000.0, 200, 300, (0.5, 0.25))
    expected = torch.tensor([[2000.0, 0, 149.5], [0, 4000.0, 99.5], [0, 0, 1]], dtype=torch.float64)
    assert torch.equal(geometry.intrinsics(), expected)


def test_projection_by_similar_triangles():
    """A camera-frame point (x, y, z) lands at column cu + x sdd / (z du)."""
    geometry = CArmGeometry(1000.0, 64, 80, (0.5, 0.8), principal_point_px=(30.0, 40.0))
    points = torch.tensor([[10.0, -5.0, 500.0], [0.0, 0.0, 700.0], [-20.0, 30.0, 800.0]], dtype=torch.float64)
    pixels = project_points(torch.eye(4, dtype=torch.float64), geometry, points)
    expected_col = 30.0 + points[:, 0] * 1000.0 / (points[:, 2] * 0.5)
    expected_row = 40.0 + points[:, 1] * 1000.0 / (points[:, 2] * 0.8)
    assert torch.allclose(pixels, torch.stack([expected_col, expected_row], 1))


@pytest.mark.parametrize(
    "view, column_direction, beam_direction",
    [("ap", (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), ("lateral", (0.0, -1.0, 0.0), (1.0, 0.0, 0.0)),
     ("pa", (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0))],  # PA from the source: the patient's right towards larger columns
)
def test_nominal_views_follow_the_documented_anatomy(view, column_direction, beam_direction):
    isocenter = torch.tensor([12.0, -30.0, 250.0], dtype=torch.float64)
    nominal = nominal_view(view, isocenter, 675.0)
    pose = nominal.camera_from_world
    # isocentre on the principal ray at the source-to-isocentre distance
    assert torch.allclose((pose[:3, :3] @ isocenter + pose[:3, 3]), torch.tensor([0, 0, 675.0], dtype=torch.float64))
    points = torch.stack(
        [isocenter, isocenter + torch.tensor(column_direction, dtype=torch.float64) * 10, isocenter + torch.tensor([0, 0, 10.0], dtype=torch.float64)]
    ).double()
    pixels = project_points(pose, GEOMETRY, points)
    assert torch.allclose(pixels[0], torch.tensor(GEOMETRY.principal_point_px, dtype=torch.float64))
    assert pixels[1, 0] > pixels[0, 0] + 1 and abs(pixels[1, 1] - pixels[0, 1]) < 1e-9  # to larger columns
    assert pixels[2, 1] < pixels[0, 1] - 1  # superior (head) towards row 0
    source_world = invert_rigid(pose)[:3, 3]
    beam = isocenter - source_world
    assert torch.allclose(beam / beam.norm(), torch.tensor(beam_direction, dtype=torch.float64))
    assert torch.det(pose[:3, :3]) == pytest.approx(1.0)


def test_paper_matrix_is_the_product_of_equation_3():
    rx, ry, rz, tx, ty, tz = 20.0, -35.0, 50.0, 3.0, -4.0, 5.0
    c, s = math.cos, math.sin
    a, b, g = map(math.radians, (rx, ry, rz))
    Mt = np.array([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]])
    Mrx = np.array([[1, 0, 0, 0], [0, c(a), -s(a), 0], [0, s(a), c(a), 0], [0, 0, 0, 1]])
    Mry = np.array([[c(b), 0, s(b), 0], [0, 1, 0, 0], [-s(b), 0, c(b), 0], [0, 0, 0, 1]])
    Mrz = np.array([[c(g), -s(g), 0, 0], [s(g), c(g), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    expected = torch.from_numpy(Mt @ Mrx @ Mry @ Mrz)
    theta = torch.tensor([rx, ry, rz, tx, ty, tz], dtype=torch.float64)
    assert torch.allclose(paper_matrix(theta), expected, atol=1e-12)


def test_euler_and_paper_params_round_trip():
    generator = torch.Generator().manual_seed(1)
    theta = random_theta(generator, 200)
    assert torch.allclose(paper_params(paper_matrix(theta)), theta, atol=1e-9)
    angles = torch.deg2rad(theta[:, :3])
    assert torch.allclose(euler_from_rotation(rotation_from_euler(angles)), angles, atol=1e-9)


@pytest.mark.parametrize("view", ["ap", "lateral", "pa"])
def test_nominal_view_params_round_trip(view):
    generator = torch.Generator().manual_seed(2)
    nominal = nominal_view(view, torch.tensor([5.0, 60.0, -120.0], dtype=torch.float64), 700.0)
    theta = random_theta(generator, 100)
    poses = nominal.pose(theta)
    assert torch.allclose(nominal.params(poses), theta, atol=1e-8)
    assert torch.allclose(nominal.pose(torch.zeros(6, dtype=torch.float64)), nominal.camera_from_world)


def test_parameters_move_the_ct_in_the_isocentric_frame():
    isocenter = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    nominal = nominal_view("ap", isocenter, 675.0)

    def isocenter_camera(theta):
        pose = nominal.pose(torch.tensor(theta, dtype=torch.float64))
        return pose[:3, :3] @ isocenter + pose[:3, 3]

    assert torch.allclose(isocenter_camera([0, 0, 0, 7.0, -3.0, 11.0]), torch.tensor([7.0, -3.0, 686.0], dtype=torch.float64))
    # rotations pivot about the isocentre: it does not move
    assert torch.allclose(isocenter_camera([10.0, -20.0, 30.0, 0, 0, 0]), torch.tensor([0, 0, 675.0], dtype=torch.float64))
    # rz is an in-plane rotation: a point to the right of the isocentre turns towards larger rows (+y)
    pose = nominal.pose(torch.tensor([0, 0, 90.0, 0, 0, 0], dtype=torch.float64))
    left = isocenter + torch.tensor([10.0, 0, 0], dtype=torch.float64)
    assert torch.allclose(pose[:3, :3] @ left + pose[:3, 3], torch.tensor([0, 10.0, 675.0], dtype=torch.float64), atol=1e-9)


def test_invert_rigid_matches_general_inverse():
    generator = torch.Generator().manual_seed(3)
    poses = paper_matrix(random_theta(generator, 20))
    assert torch.allclose(invert_rigid(poses), torch.linalg.inv(poses), atol=1e-10)


def test_rigid_broadcasts_batches_like_a_loop():
    generator = torch.Generator().manual_seed(4)
    rotations = paper_matrix(random_theta(generator, 2))[:, None, :3, :3]  # (2, 1, 3, 3)
    translations = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    stacked = rigid(rotations, translations)
    assert stacked.shape == (2, 5, 4, 4)
    for i in range(2):
        for j in range(5):
            expected = torch.eye(4, dtype=torch.float64)
            expected[:3, :3], expected[:3, 3] = rotations[i, 0], translations[j]
            assert torch.equal(stacked[i, j], expected)
    assert rigid(rotations[0, 0], translations[0]).shape == (4, 4)


def test_building_a_pose_does_not_import_sympy():
    """torch.broadcast_shapes pulls in torch.fx's symbolic shapes and sympy (0.3 s per process)."""
    import subprocess
    import sys

    code = ("import sys, torch; from sopi.geometry import nominal_view; "
            "nominal_view('ap', torch.zeros(3, dtype=torch.float64), 675.0).pose(torch.zeros(6, dtype=torch.float64)); "
            "print('sympy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ras_lps_flip():
    point_lps = torch.tensor([1.0, 2.0, 3.0, 1.0], dtype=torch.float64)
    assert torch.equal(RAS_FROM_LPS @ point_lps, torch.tensor([-1.0, -2.0, 3.0, 1.0], dtype=torch.float64))
    assert torch.equal(RAS_FROM_LPS @ RAS_FROM_LPS, torch.eye(4, dtype=torch.float64))


def test_binning_keeps_projections_consistent():
    full = CArmGeometry.preset("perlove-plx118f-full")
    binned = full.binned(4)
    assert binned.pixel_spacing_mm == pytest.approx((0.79836, 0.79836))
    assert binned.principal_point_px == pytest.approx((127.5, 127.5))
    nominal = nominal_view("ap", torch.zeros(3, dtype=torch.float64), 675.0)
    points = torch.tensor([[30.0, 5.0, -40.0], [-12.0, 0.0, 7.0]], dtype=torch.float64)
    full_px = project_points(nominal.camera_from_world, full, points)
    binned_px = project_points(nominal.camera_from_world, binned, points)
    assert torch.allclose((full_px + 0.5) / 4 - 0.5, binned_px, atol=1e-9)
    with pytest.raises(InputError, match="cannot bin"):
        full.binned(3)


def test_geometry_json_round_trip_and_errors(tmp_path):
    geometry = CArmGeometry(1100.0, 300, 200, (0.3, 0.4), principal_point_px=(99.0, 151.0), source_to_isocenter_mm=700.0)
    path = tmp_path / "geometry.json"
    geometry.save(path)
    assert CArmGeometry.load(path) == geometry
    assert set(json.loads(path.read_text(encoding="utf-8"))) >= {"sdd_mm", "rows", "cols", "pixel_spacing_mm", "principal_point_px"}
    bad = tmp_path / "bad_geometry.json"
    bad.write_text(json.dumps({"sdd_mm": 1000, "rows": 10}))
    with pytest.raises(InputError, match="bad_geometry.json.*cols"):
        CArmGeometry.load(bad)
    bad.write_text(json.dumps({"sdd_mm": -5, "rows": 10, "cols": 10, "pixel_spacing_mm": [1, 1]}))
    with pytest.raises(InputError, match="bad_geometry.json.*sdd_mm"):
        CArmGeometry.load(bad)
    with pytest.raises(InputError, match="unknown geometry preset"):
        CArmGeometry.preset("nope")


def test_pose_json_round_trip_and_errors(tmp_path):
    pose = nominal_view("lateral", torch.tensor([1.0, 2.0, 3.0]), 650.0).pose(torch.tensor([1.0, 2, 3, 4, 5, 6], dtype=torch.float64))
    path = tmp_path / "pose.json"
    save_pose(path, pose, view="lateral")
    assert torch.equal(load_pose(path), pose)
    assert json.loads(path.read_text(encoding="utf-8"))["view"] == "lateral"
    bad = tmp_path / "scaled_pose.json"
    bad.write_text(json.dumps({"matrix": (2 * torch.eye(4)).tolist()}))
    with pytest.raises(InputError, match="scaled_pose.json.*rigid"):
        load_pose(bad)
    bad.write_text("{not json")
    with pytest.raises(InputError, match="scaled_pose.json"):
        load_pose(bad)
    with pytest.raises(InputError, match="missing.json.*not found"):
        load_pose(tmp_path / "missing.json")


def test_padded_detector_keeps_the_rays_and_shifts_the_pixels():
    from sopi.geometry import CArmGeometry, nominal_view, project_points

    geometry = CArmGeometry(1000.0, 40, 60, (1.5, 2.0), source_to_isocenter_mm=650.0)
    grown = geometry.padded(7, 3, 5, 11)
    assert (grown.rows, grown.cols) == (40 + 3 + 11, 60 + 7 + 5) and grown.pixel_spacing_mm == geometry.pixel_spacing_mm
    pose = nominal_view("ap", (10.0, -20.0, 30.0), 650.0).camera_from_world
    points = torch.tensor([[0.0, 0.0, 0.0], [40.0, 10.0, -25.0], [-30.0, 60.0, 80.0]], dtype=torch.float64)
    shift = torch.tensor([7.0, 3.0], dtype=torch.float64)
    assert torch.allclose(project_points(pose, grown, points), project_points(pose, geometry, points) + shift, atol=1e-9)
