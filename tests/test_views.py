"""Several views: view_from_reference in geometry JSON, from DICOM positioner angles, beads in both views."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sopi.errors import InputError
from sopi.geometry import CArmGeometry, invert_rigid, nominal_view, project_points
from sopi.io import read_xray
from sopi.views import camera_from_positioner, view_from_angles, views_from_reference

GEOMETRY = CArmGeometry(1000.0, 64, 80, (0.5, 0.6), source_to_isocenter_mm=600.0)
ISOCENTER = torch.tensor([12.0, -30.0, 45.0], dtype=torch.float64)


def _lateral_from_ap() -> torch.Tensor:
    ap = nominal_view("ap", ISOCENTER, GEOMETRY.source_to_isocenter_mm)
    lateral = nominal_view("lateral", ISOCENTER, GEOMETRY.source_to_isocenter_mm)
    return lateral.camera_from_world @ invert_rigid(ap.camera_from_world)


def test_view_from_reference_round_trips_through_json_and_resizing(tmp_path):
    geometry = GEOMETRY.with_view_from_reference(_lateral_from_ap())
    path = tmp_path / "lateral.json"
    geometry.save(path)
    assert CArmGeometry.load(path) == geometry
    assert torch.allclose(CArmGeometry.load(path).reference_transform(), _lateral_from_ap(), atol=1e-12)
    assert geometry.binned(2).view_from_reference == geometry.view_from_reference  # the C-arm's motion, not the pixels
    plain = tmp_path / "plain.json"
    GEOMETRY.save(plain)
    assert "view_from_reference" not in json.loads(plain.read_text(encoding="utf-8"))
    assert torch.equal(GEOMETRY.reference_transform(), torch.eye(4, dtype=torch.float64))


@pytest.mark.parametrize(
    "matrix, message",
    [((2 * torch.eye(4)).tolist(), "rigid"), ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], "4x4"), ("identity", "4x4 matrix of numbers")],
)
def test_bad_view_from_reference_names_the_file_and_field(tmp_path, matrix, message):
    path = tmp_path / "bad_view.json"
    path.write_text(json.dumps({**GEOMETRY.to_dict(), "view_from_reference": matrix}), encoding="utf-8")
    with pytest.raises(InputError, match=f"bad_view.json.*view_from_reference.*{message}"):
        CArmGeometry.load(path)


def test_positioner_angles_give_the_nominal_views():
    sid = GEOMETRY.source_to_isocenter_mm
    ap = nominal_view("ap", torch.zeros(3), sid).camera_from_world
    lateral = nominal_view("lateral", torch.zeros(3), sid).camera_from_world
    assert torch.allclose(camera_from_positioner(180.0, 0.0, sid), ap, atol=1e-12)
    assert torch.allclose(camera_from_positioner(90.0, 0.0, sid), lateral, atol=1e-12)
    assert torch.allclose(view_from_angles((180.0, 0.0), (90.0, 0.0), sid, sid), _lateral_from_ap(), atol=1e-9)
    rotation = camera_from_positioner(37.0, -21.0, sid)[:3, :3]
    assert torch.allclose(rotation @ rotation.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert float(torch.det(rotation)) == pytest.approx(1.0)


def test_a_bead_lands_at_the_predicted_pixels_in_both_views(tmp_path):
    """Beads 10 mm left of and 20 mm behind the isocentre, seen AP and lateral (similar triangles by hand)."""
    sid, sdd = GEOMETRY.source_to_isocenter_mm, GEOMETRY.sdd_mm
    (du, dv), (cu, cv) = GEOMETRY.pixel_spacing_mm, GEOMETRY.principal_point_px
    path = tmp_path / "lateral.json"
    GEOMETRY.with_view_from_reference(view_from_angles((180.0, 0.0), (90.0, 0.0), sid, sid)).save(path)
    lateral = CArmGeometry.load(path)
    ap_pose = nominal_view("ap", ISOCENTER, sid).camera_from_world
    lateral_pose = lateral.reference_transform() @ ap_pose
    beads = ISOCENTER + torch.tensor([[10.0, 0.0, 0.0], [0.0, 20.0, 0.0]], dtype=torch.float64)
    # AP: columns towards the patient's left, beam anterior -> posterior
    expected_ap = torch.tensor([[cu + sdd / du * 10.0 / sid, cv], [cu, cv]], dtype=torch.float64)
    # lateral: beam right -> left, columns towards anterior
    expected_lateral = torch.tensor([[cu, cv], [cu - sdd / du * 20.0 / sid, cv]], dtype=torch.float64)
    assert torch.allclose(project_points(ap_pose, GEOMETRY, beads), expected_ap, atol=1e-9)
    assert torch.allclose(project_points(lateral_pose, lateral, beads), expected_lateral, atol=1e-9)


def test_secondary_angle_tilts_the_beam_towards_the_head():
    sid, sdd = GEOMETRY.source_to_isocenter_mm, GEOMETRY.sdd_mm
    (du, dv), (cu, cv) = GEOMETRY.pixel_spacing_mm, GEOMETRY.principal_point_px
    tilt = 30.0
    pose = view_from_angles((180.0, 0.0), (180.0, tilt), sid, sid) @ nominal_view("ap", ISOCENTER, sid).camera_from_world
    bead = ISOCENTER + torch.tensor([[0.0, 0.0, 10.0]], dtype=torch.float64)  # 10 mm superior
    b = math.radians(tilt)
    expected = torch.tensor([[cu, cv + sdd / dv * (-10.0 * math.cos(b)) / (sid + 10.0 * math.sin(b))]], dtype=torch.float64)
    assert torch.allclose(project_points(pose, GEOMETRY, bead), expected, atol=1e-9)


def test_views_from_reference_uses_geometries_then_dicom_angles():
    moved = GEOMETRY.with_view_from_reference(_lateral_from_ap())
    first, second = views_from_reference([GEOMETRY, moved])
    assert torch.equal(first, torch.eye(4, dtype=torch.float64)) and torch.allclose(second, _lateral_from_ap())
    # both relative to a common frame: view 0 carries one too
    relative = views_from_reference([moved, GEOMETRY.with_view_from_reference(torch.eye(4))])[1]
    assert torch.allclose(relative, invert_rigid(_lateral_from_ap()), atol=1e-12)
    angles = [{"primary_angle_deg": 180.0, "secondary_angle_deg": 0.0}, {"primary_angle_deg": 90.0}]
    assert torch.allclose(views_from_reference([GEOMETRY, GEOMETRY], angles)[1], _lateral_from_ap(), atol=1e-9)
    with pytest.raises(InputError, match="lateral.mha.*view_from_reference"):
        views_from_reference([GEOMETRY, GEOMETRY], names=["ap.mha", "lateral.mha"])
    with pytest.raises(InputError, match="third.*no view_from_reference"):
        views_from_reference([GEOMETRY, moved, GEOMETRY], names=["first", "second", "third"])


def _dx(path: Path, primary: str, secondary: str, isocenter: str | None) -> Path:
    image = sitk.GetImageFromArray(np.full((6, 8), 1000, dtype=np.uint16))
    image.SetSpacing((0.5, 0.5))
    tags = {"0008|0060": "XA", "0018|1110": "1000", "0018|1111": "550", "0018|1510": primary, "0018|1511": secondary}
    if isocenter is not None:
        tags["0018|9402"] = isocenter
    for key, value in tags.items():
        image.SetMetaData(key, value)
    sitk.WriteImage(image, str(path))
    return path


def test_dicom_positioner_angles_place_the_second_view(tmp_path):
    ap = read_xray(_dx(tmp_path / "ap.dcm", "180", "0", "600"))
    lateral = read_xray(_dx(tmp_path / "lateral.dcm", "90", "0", "600"))
    assert ap.geometry.source_to_isocenter_mm == 600.0  # DistanceSourceToIsocenter wins over DistanceSourceToPatient
    assert lateral.metadata["primary_angle_deg"] == 90.0 and lateral.metadata["distance_source_to_isocenter_mm"] == 600.0
    transforms = views_from_reference([ap.geometry, lateral.geometry], [ap.metadata, lateral.metadata])
    assert torch.allclose(transforms[1], _lateral_from_ap(), atol=1e-9)
    assert read_xray(_dx(tmp_path / "old.dcm", "0", "0", None)).geometry.source_to_isocenter_mm == 550.0
