"""Mirrored and upside-down X-rays (sopi.xray_orientation): DICOM Patient Orientation, flips, registration."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sopi.cli import main
from sopi.distances import mtre_mm
from sopi.errors import InputError
from sopi.geometry import CArmGeometry, nominal_view, save_pose
from sopi.io import mask_from_labels, read_xray
from sopi.io_xray import XRay
from sopi.registration import register
from sopi.render import render_drr, rendering_volume
from sopi.sample_data import load_sample, sample_ct_path, sample_vertebrae_path
from sopi.segment import mask_centroid_world
from sopi.xray_orientation import FLIPS, Orientation, orient_xray, orientation_from_tag, patient_direction
from test_dicom_xray import write_dicom

#: An off-centre principal point, so that mirroring it matters.
DETECTOR = CArmGeometry(1011.7, 80, 96, (2.4, 2.4), principal_point_px=(40.0, 43.5), source_to_isocenter_mm=675.0)
AP = nominal_view("ap", (0.0, 0.0, 0.0), 675.0).camera_from_world
LATERAL = nominal_view("lateral", (0.0, 0.0, 0.0), 675.0).camera_from_world
PA = nominal_view("pa", (0.0, 0.0, 0.0), 675.0).camera_from_world


def test_patient_directions_are_lps_unit_vectors():
    assert torch.equal(patient_direction("L"), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.equal(patient_direction(" a "), torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(patient_direction("LF"), torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64) / 2**0.5)
    for bad in ("", "X", "LR"):
        with pytest.raises(InputError, match="Patient Orientation"):
            patient_direction(bad)


@pytest.mark.parametrize("pose, tag, expected", [
    (AP, "L\\F", (False, False, False)),  # the convention: the patient's left towards increasing column, the head at row 0
    (AP, "R\\F", (False, True, False)),
    (AP, "L\\H", (False, False, True)),
    (AP, "R\\H", (False, True, True)),
    (AP, "LF\\FR", (False, False, False)),  # oblique letters: the closer axis decides
    (AP, "F\\L", (True, False, False)),  # the head to the left, the patient's left at the bottom: the transpose
    (AP, "F\\R", (True, True, False)),  # turned 90 deg counter-clockwise as displayed
    (AP, "H\\L", (True, False, True)),  # turned 90 deg clockwise
    (LATERAL, "A\\F", (False, False, False)),
    (LATERAL, "P\\F", (False, True, False)),
    (LATERAL, "P\\H", (False, True, True)),
    (PA, "L\\F", (False, True, False)),  # a PA radiograph displayed the radiological way is the source's view mirrored
    (PA, "R\\F", (False, False, False)),
])
def test_the_orientation_follows_patient_orientation_against_the_start_pose(pose, tag, expected):
    orientation, reason = orientation_from_tag(tag, pose)
    assert (orientation.transpose, orientation.flip_columns, orientation.flip_rows) == expected
    assert tag in reason and ("kept as stored" in reason) == (not any(expected))


def test_the_given_turns_are_the_tags_of_such_images():
    """``rotated-cw`` is what an AP image turned 90 deg clockwise is tagged (H\\L), ``rotated-ccw`` F\\R."""
    for flip, tag in (("rotated-cw", "H\\L"), ("rotated-ccw", "F\\R"), ("both", "R\\H"), ("left-right", "R\\F"), ("diagonal", "F\\L"),
                      ("anti-diagonal", "H\\R")):
        image = XRay(torch.zeros(4, 6), CArmGeometry(1000.0, 4, 6, (0.2, 0.2)), None, {"patient_orientation": tag})
        assert orient_xray(image, AP, flip)[1]["transpose"] == orient_xray(image, AP)[1]["transpose"]
        assert Orientation.from_record(orient_xray(image, AP, flip)[1]) == Orientation.from_record(orient_xray(image, AP)[1])


def test_an_image_from_another_view_is_kept_as_stored_and_said_so():
    orientation, reason = orientation_from_tag("A\\F", AP)  # a lateral's tag against an AP start
    assert not orientation.changes and "lies between" in reason
    with pytest.raises(InputError, match="two entries"):
        orientation_from_tag("L", AP)


def _phantom():
    """A small asymmetric CT (an L of bone in soft tissue) and its spine mask."""
    from sopi.volume import Volume, world_from_index_affine

    data = torch.full((24, 24, 24), -1000.0)
    data[2:22, 4:20, 4:20] = 40.0
    data[5:18, 9:13, 6:10] = 900.0
    data[14:18, 9:13, 10:18] = 900.0
    volume = Volume(data, world_from_index_affine((-46.0, -46.0, -46.0), (4.0, 4.0, 4.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    return volume


def _stored_as(flip: str, image: torch.Tensor, geometry: CArmGeometry) -> tuple[torch.Tensor, CArmGeometry]:
    """The conventional ``image`` on ``geometry`` as a file would hold it after ``flip`` (torch's own flips and
    turns), with the detector worked out by hand: where the principal point's pixel lands, and the spacings."""
    rows, cols = geometry.shape
    (cu, cv), (du, dv) = geometry.principal_point_px, geometry.pixel_spacing_mm
    if flip == "left-right":
        return image.flip(-1), replace(geometry, principal_point_px=(cols - 1 - cu, cv))
    if flip == "up-down":
        return image.flip(-2), replace(geometry, principal_point_px=(cu, rows - 1 - cv))
    if flip == "both":
        return image.flip(-1, -2), replace(geometry, principal_point_px=(cols - 1 - cu, rows - 1 - cv))
    if flip == "rotated-cw":  # pixel (col c, row r) goes to (col rows - 1 - r, row c)
        return torch.rot90(image, -1, (-2, -1)), replace(geometry, rows=cols, cols=rows, pixel_spacing_mm=(dv, du), principal_point_px=(rows - 1 - cv, cu))
    if flip == "rotated-ccw":  # pixel (col c, row r) goes to (col r, row cols - 1 - c)
        return torch.rot90(image, 1, (-2, -1)), replace(geometry, rows=cols, cols=rows, pixel_spacing_mm=(dv, du), principal_point_px=(cv, cols - 1 - cu))
    if flip == "diagonal":  # pixel (col c, row r) goes to (col r, row c)
        return image.transpose(-2, -1), replace(geometry, rows=cols, cols=rows, pixel_spacing_mm=(dv, du), principal_point_px=(cv, cu))
    assert flip == "anti-diagonal"  # pixel (col c, row r) goes to (col rows - 1 - r, row cols - 1 - c)
    return torch.rot90(image, -1, (-2, -1)).flip(-2), replace(geometry, rows=cols, cols=rows, pixel_spacing_mm=(dv, du),
                                                                principal_point_px=(rows - 1 - cv, cols - 1 - cu))


@pytest.mark.parametrize("flip", ["left-right", "up-down", "both", "rotated-cw", "rotated-ccw", "diagonal", "anti-diagonal"])
def test_a_turned_file_is_turned_back_with_its_detector(flip):
    """The conventional image X is rendered on DETECTOR (not square, spacings unequal, principal point off
    centre); the file holds X mirrored or turned (torch's flips and turns) on a detector worked out by hand.
    Turned back, the image is X and the DRR on the turned detector equals it: the detector turned with it."""
    ct = _phantom()
    pose = nominal_view("ap", ct.center_world, 675.0).pose(torch.tensor([3.0, -2.0, 5.0, 6.0, -4.0, 10.0], dtype=torch.float64))
    volume = rendering_volume(ct, "hu")
    detector = replace(DETECTOR, pixel_spacing_mm=(2.4, 2.0))
    conventional = render_drr(volume, detector, pose)
    mask = torch.zeros(detector.shape, dtype=torch.bool)
    mask[5:60, 10:90] = True
    image, on_file = _stored_as(flip, conventional, detector)
    stored = XRay(image.clone(), on_file, "turned.mha", {}, _stored_as(flip, mask, detector)[0].clone())
    before = stored.image.clone()
    turned, record = orient_xray(stored, pose, flip)
    assert torch.equal(stored.image, before) and stored.geometry == on_file  # the input is left alone
    assert torch.equal(turned.image, conventional) and torch.equal(turned.field_mask, mask)
    assert turned.geometry == detector
    assert torch.allclose(render_drr(volume, turned.geometry, pose), turned.image, atol=1e-5)
    assert record["source"] == "given" and record["transpose"] == (flip.startswith("rotated") or flip.endswith("diagonal"))
    assert torch.equal(Orientation.from_record(record).undo(turned.image), stored.image)  # back to the file's orientation
    as_stored = render_drr(volume, on_file, pose)
    assert not torch.allclose(as_stored, stored.image, atol=1e-3)  # as stored, this pose does not explain it


def test_auto_follows_the_dicom_tag_and_keeps_untagged_images(tmp_path: Path):
    stored = (np.arange(6 * 8).reshape(6, 8) * 50).astype(np.uint16)
    geometry = CArmGeometry(1000.0, 6, 8, (0.2, 0.2))
    mirrored = read_xray(write_dicom(tmp_path / "r.dcm", stored, PatientOrientation=["R", "F"]), geometry=geometry)
    assert mirrored.metadata["patient_orientation"] == "R\\F"
    turned, record = orient_xray(mirrored, AP)
    assert record["source"] == "dicom" and (record["flip_columns"], record["flip_rows"]) == (True, False)
    np.testing.assert_array_equal(turned.image.numpy(), stored[:, ::-1])
    assert turned.metadata["orientation"] == record
    kept, record = orient_xray(read_xray(write_dicom(tmp_path / "l.dcm", stored, PatientOrientation=["L", "F"]), geometry=geometry), AP)
    assert not (record["flip_columns"] or record["flip_rows"]) and record["source"] == "dicom"
    untagged, record = orient_xray(read_xray(write_dicom(tmp_path / "n.dcm", stored), geometry=geometry), AP)
    assert record["source"] == "none" and torch.equal(untagged.image, torch.from_numpy(stored.astype(np.float32)))
    forced, record = orient_xray(mirrored, AP, "none")
    assert forced is mirrored and record["source"] == "given"
    with pytest.raises(InputError, match="flip 'sideways'"):
        orient_xray(mirrored, AP, "sideways")


SMALL = CArmGeometry(1011.7, 96, 96, (2.4, 2.4), source_to_isocenter_mm=675.0)


@pytest.fixture(scope="module")
def mirrored_case():
    """The sample CT's X-ray at a known pose, stored mirrored left-right and tagged so (R\\F)."""
    ct, labels = load_sample()
    spine = mask_from_labels(labels)
    nominal = nominal_view("ap", mask_centroid_world(spine), SMALL.source_to_isocenter_mm)
    truth = nominal.pose(torch.tensor([2.0, -1.5, 2.5, 4.0, -3.0, 8.0], dtype=torch.float64))
    image = render_drr(rendering_volume(ct, "hu"), SMALL, truth).flip(-1).contiguous()
    points = torch.nonzero(spine.data)[::200].flip(-1).double() @ spine.world_from_index[:3, :3].T + spine.world_from_index[:3, 3]
    return ct, spine, nominal, truth, image, points


def test_a_mirrored_dicom_registers_once_turned_and_not_as_stored(mirrored_case):
    ct, spine, nominal, truth, image, points = mirrored_case
    tagged = XRay(image, SMALL, None, {"patient_orientation": "R\\F"})
    run = lambda flip: register(ct, tagged, initial_pose=nominal.camera_from_world, mask=spine, method="opt", device="cpu", flip=flip)  # noqa: E731
    turned = run("auto")
    assert float(mtre_mm(turned.camera_from_world, truth, points)) < 1.0
    assert turned.xray_preparation["orientation"]["flip_columns"] and turned.xray_preparation["orientation"]["source"] == "dicom"
    as_stored = run("none")
    assert float(mtre_mm(as_stored.camera_from_world, truth, points)) > 4.0


def test_the_cli_flips_and_writes_the_overlay_in_the_files_orientation(mirrored_case, tmp_path, capsys):
    from PIL import Image

    from sopi.io import write_xray

    _, _, nominal, truth, image, _ = mirrored_case
    write_xray(tmp_path / "xray.mha", image, SMALL)
    save_pose(tmp_path / "init.json", nominal.camera_from_world)
    out, fused = tmp_path / "result.json", tmp_path / "fused.png"
    code = main([
        "register", "--ct", str(sample_ct_path()), "--xray", str(tmp_path / "xray.mha"), "--init", str(tmp_path / "init.json"),
        "--mask", str(sample_vertebrae_path()), "--method", "opt", "--flip", "left-right", "--out", str(out), "--fused", str(fused),
        "--device", "cpu", "--quiet",
    ])
    assert code == 0
    assert "X-ray registered turned: flip 'left-right' given by the caller" in capsys.readouterr().out
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["xray_preparation"]["orientation"]["flip_columns"] is True
    assert np.abs(np.array(result["matrix"]) - truth.numpy()).max() < 2.0  # the pose of the conventional image
    picture = np.asarray(Image.open(fused), dtype=np.float64)
    drr_channel = picture[..., 0] - picture[..., 2]  # the DRR is blended in orange (red minus blue); it must line up with the file
    xray = image.numpy()
    as_filed = np.corrcoef(drr_channel.ravel(), xray.ravel())[0, 1]
    mirrored = np.corrcoef(drr_channel.ravel(), xray[:, ::-1].ravel())[0, 1]
    assert as_filed > mirrored


def test_the_cli_offers_every_flip():
    from sopi.cli import build_parser

    parser = build_parser()
    register_parser = next(action for action in parser._subparsers._group_actions[0].choices.values() if action.prog.endswith("register"))
    flip = next(action for action in register_parser._actions if action.dest == "flip")
    assert tuple(flip.choices) == FLIPS and flip.default == "auto"


def test_a_pa_radiograph_displayed_the_radiological_way_registers_from_the_pa_view(mirrored_case):
    """A supine patient imaged from under the table (beam posterior to anterior), the image displayed with
    the patient's left on the viewer's right and tagged so (L\\F): the PA view's camera sees it mirrored,
    ``auto`` turns it back, and registration from the nominal PA view recovers the pose."""
    ct, spine, _, _, _, points = mirrored_case
    pa = nominal_view("pa", mask_centroid_world(spine), SMALL.source_to_isocenter_mm)
    truth = pa.pose(torch.tensor([-2.0, 1.5, 3.0, -4.0, 3.0, 6.0], dtype=torch.float64))
    from_the_source = render_drr(rendering_volume(ct, "hu"), SMALL, truth)
    displayed = XRay(from_the_source.flip(-1).contiguous(), SMALL, None, {"patient_orientation": "L\\F"})
    result = register(ct, displayed, view="pa", mask=spine, method="opt", device="cpu")
    assert result.xray_preparation["orientation"]["flip_columns"] and float(mtre_mm(result.camera_from_world, truth, points)) < 1.0


def test_pydicoms_real_radiographs_keep_their_orientation():
    """pydicom's Agfa CR files of a cervical spine: the AP ones are tagged L\\\\F, the C-arm convention of the
    AP view, so ``auto`` keeps them; the left lateral (LL) carries the same tag, which no lateral image can
    have (its columns would run along A or P), so against a lateral start it is kept, and the record says why."""
    import pydicom

    from test_dicom_xray import _pydicom_cr_files

    files = _pydicom_cr_files()
    if not files:
        pytest.skip("pydicom's CR test files absent")
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        xray = read_xray(path, geometry=CArmGeometry(1000.0, ds.Rows, ds.Columns, (0.1, 0.1)))
        assert xray.metadata["patient_orientation"] == "L\\F"
        start = LATERAL if ds.ViewPosition == "LL" else AP
        turned, record = orient_xray(xray, start)
        assert turned is xray and record["source"] == "dicom" and not (record["transpose"] or record["flip_columns"] or record["flip_rows"])
        assert ("lies between" in record["reason"]) == (ds.ViewPosition == "LL")
