"""A registration that looks failed after a judged polarity is rerun with the other reading."""

from __future__ import annotations

import pytest
import torch

import sopi.xray_prep as xray_prep
from sopi.distances import mtre_mm
from sopi.geometry import CArmGeometry, nominal_view
from sopi.io import mask_from_labels
from sopi.io_xray import XRay
from sopi.registration import register
from sopi.registration.preparation import other_reading
from sopi.render import render_drr, rendering_volume
from sopi.sample_data import load_sample
from sopi.segment import mask_centroid_world

SMALL = CArmGeometry(1011.7, 96, 96, (2.4, 2.4), source_to_isocenter_mm=675.0)


def test_other_reading_follows_the_record():
    assert other_reading({"polarity_source": "drr-comparison", "polarity": "bone-dark"}) == "bone-bright"
    scores = {"bone-bright": 0.5, "bone-dark": 0.4, "intensity": 0.45}
    assert other_reading({"polarity_source": "drr-comparison", "polarity": "bone-bright", "polarity_scores": scores}) == "intensity"
    assert other_reading({"polarity_source": "drr-comparison", "polarity": "bone-bright", "polarity_scores": {"bone-dark": 0.3}}) == "bone-dark"
    assert other_reading({"polarity": "bone-bright"}) is None  # settled by the file's tags or the caller


@pytest.fixture(scope="module")
def case():
    ct, labels = load_sample()
    spine = mask_from_labels(labels)
    start = nominal_view("ap", mask_centroid_world(spine), SMALL.source_to_isocenter_mm)
    truth = start.pose(torch.tensor([2.0, -2.0, 1.5, 3.0, -2.0, 5.0], dtype=torch.float64))
    image = render_drr(rendering_volume(ct, "hu"), SMALL, truth)  # bone bright
    points = torch.nonzero(spine.data)[::200].flip(-1).double() @ spine.world_from_index[:3, :3].T + spine.world_from_index[:3, 3]
    return ct, spine, start, truth, image, points


def test_a_wrong_polarity_judgement_is_undone_by_the_retry(case, monkeypatch):
    ct, spine, start, truth, image, points = case
    wrong = {"bone-bright": 0.1, "bone-dark": 0.9, "intensity": 0.5}  # a confident, wrong judgement
    monkeypatch.setattr(xray_prep, "detect_polarity", lambda *args, **kwargs: ("bone-dark", dict(wrong)))
    result = register(ct, XRay(image, SMALL), initial_pose=start.camera_from_world, mask=spine, method="opt")
    retry = result.xray_preparation["polarity_retry"]
    assert retry["reading"] == "bone-bright" and retry["kept"] and retry["first_confidence"] < 0.5 < retry["confidence"]
    assert result.xray_preparation["polarity"] == "bone-bright" and not result.likely_failed
    assert float(mtre_mm(result.camera_from_world, truth, points)) < 1.0


def test_no_retry_when_the_result_looks_right_or_the_polarity_was_given(case, monkeypatch):
    ct, spine, start, truth, image, points = case
    right = register(ct, XRay(image, SMALL), initial_pose=start.camera_from_world, mask=spine, method="opt")
    assert "polarity_retry" not in right.xray_preparation and not right.likely_failed
    monkeypatch.setattr(xray_prep, "detect_polarity", lambda *args, **kwargs: ("bone-dark", {"bone-bright": 0.1, "bone-dark": 0.9}))
    settled = XRay(image.max() - image, SMALL, metadata={"polarity_settled": True})  # the caller says: as it is
    wrong = register(ct, settled, initial_pose=start.camera_from_world, mask=spine, method="opt")
    assert wrong.likely_failed and "polarity_retry" not in wrong.xray_preparation
