"""Joint registration of several views on a tiny synthetic volume (a single view cannot see depth there)."""

from __future__ import annotations

import pytest
import torch

from sopi.distances import mtre_mm
from sopi.errors import InputError
from sopi.geometry import CArmGeometry, invert_rigid, nominal_view, transform_points
from sopi.io_xray import XRay
from sopi.registration.multiview import register_views
from sopi.render import render_drr, rendering_volume
from sopi.volume import Volume

#: A C-arm 8 m away: near-parallel rays, so 20 mm of depth changes one view's image by a tenth of a pixel.
FAR = CArmGeometry(8000.0, 32, 32, (3.6, 3.6), source_to_isocenter_mm=7000.0)
TRUTH = torch.tensor([3.0, -2.0, 4.0, 4.0, -3.0, 20.0], dtype=torch.float64)  # deg, mm; 20 mm deeper than the start


def blobs_ct(size: int = 16, spacing_mm: float = 4.5) -> Volume:
    """HU volume: air with seven bone ellipsoids at seeded places (no symmetry to confuse the pose)."""
    k, j, i = torch.meshgrid(*(torch.arange(size, dtype=torch.float32),) * 3, indexing="ij")
    data = torch.full((size, size, size), -1000.0)
    generator = torch.Generator().manual_seed(1)
    centres = torch.rand(7, 3, generator=generator) * (size - 6) + 3
    radii = (torch.rand(7, generator=generator) * 2.5 + 1.5) * 3.0 / spacing_mm
    for centre, radius in zip(centres, radii):
        data[((i - centre[0]) ** 2 + (j - centre[1]) ** 2 + ((k - centre[2]) * 1.4) ** 2) < radius**2] = 1000.0
    half = size * spacing_mm / 2
    affine = torch.tensor([[spacing_mm, 0, 0, -half], [0, spacing_mm, 0, -half], [0, 0, spacing_mm, -half], [0, 0, 0, 1.0]])
    return Volume(data, affine.to(torch.float64))


@pytest.fixture(scope="module")
def two_views():
    """The CT, view 0's start (nominal AP), the true pose, and the AP and lateral X-rays at it."""
    ct = blobs_ct()
    sid = FAR.source_to_isocenter_mm
    ap, lateral = (nominal_view(name, ct.center_world, sid) for name in ("ap", "lateral"))
    lateral_geometry = FAR.with_view_from_reference(lateral.camera_from_world @ invert_rigid(ap.camera_from_world))
    truth = ap.pose(TRUTH)
    attenuation = rendering_volume(ct, "hu")
    xrays = [XRay(render_drr(attenuation, FAR, truth), FAR),
             XRay(render_drr(attenuation, lateral_geometry, lateral_geometry.reference_transform() @ truth), lateral_geometry)]
    return ct, ap.camera_from_world, truth, xrays


def _depth_error_mm(pose: torch.Tensor, truth: torch.Tensor, point: torch.Tensor) -> float:
    """Signed error along view 0's principal ray where the two poses put ``point`` (mm)."""
    return float((transform_points(pose, point[None]) - transform_points(truth, point[None]))[0, 2])


def test_two_views_pin_down_the_depth_one_view_misses(two_views):
    ct, start, truth, xrays = two_views
    centre = ct.center_world
    points = centre + torch.tensor([[20.0, 0, 0], [0, 20, 0], [0, 0, 20], [-20, -20, -20]], dtype=torch.float64)
    single = register_views(ct, xrays[:1], initial_pose=start, device="cpu", prepare=False, iteration_scale=0.5)
    joint = register_views(ct, xrays, initial_pose=start, device="cpu", prepare=False, iteration_scale=0.5)
    assert abs(_depth_error_mm(start, truth, centre)) == pytest.approx(20.0, abs=0.5)
    assert abs(_depth_error_mm(single.camera_from_world, truth, centre)) > 10.0  # one view: depth left where it started
    assert abs(_depth_error_mm(joint.camera_from_world, truth, centre)) < 1.0
    assert float(mtre_mm(joint.camera_from_world, truth, points)) < 1.0
    # every view's pose follows view 0's through its view_from_reference
    assert torch.allclose(joint.view_poses[1], xrays[1].geometry.reference_transform() @ joint.camera_from_world, atol=1e-9)
    assert torch.equal(joint.view_poses[0], joint.camera_from_world)
    assert all(score > 0.9 for score in joint.view_similarities)
    result = joint.to_dict()
    assert result["matrix"] == joint.camera_from_world.tolist() and len(result["views"]) == 2


def test_bad_view_lists_get_a_clear_error(two_views):
    ct, start, _, xrays = two_views
    with pytest.raises(InputError, match="geometries: 1 given for 2 X-rays"):
        register_views(ct, xrays, geometries=[FAR], initial_pose=start)
    with pytest.raises(InputError, match="X-ray 1.*view_from_reference"):
        register_views(ct, [xrays[0], XRay(xrays[1].image, FAR)], initial_pose=start)
    with pytest.raises(InputError, match="sopi\\+opt.*one view.*opt"):
        register_views(ct, xrays, initial_pose=start, method="sopi+opt")
    with pytest.raises(InputError, match="unknown method"):
        register_views(ct, xrays, initial_pose=start, method="nonsense")
    with pytest.raises(InputError, match="at least one X-ray"):
        register_views(ct, [], initial_pose=start)
