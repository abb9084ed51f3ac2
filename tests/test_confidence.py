"""Confidence of a registration result, judged without the truth (issue 13 item 5)."""

from __future__ import annotations

import pytest
import torch

from sopi.geometry import CArmGeometry, nominal_view
from sopi.registration.confidence import assess, combine, landscape_features, perturbations, unseen_probes
from sopi.registration.problem import PoseProblem
from sopi.report import auroc, summarise
from sopi.volume import Volume, world_from_index_affine

TINY = CArmGeometry(1011.7, 48, 48, (4.0, 4.0), source_to_isocenter_mm=675.0)


def test_perturbations_move_one_axis_at_a_time():
    theta = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
    probes = perturbations(theta, step_deg=2.0, step_mm=5.0)
    assert probes.shape == (13, 6) and torch.equal(probes[0], theta)
    moves = probes[1:] - theta
    assert ((moves != 0).sum(dim=1) == 1).all()  # each probe changes exactly one component
    expected = sorted([-2.0, 2.0] * 3 + [-5.0, 5.0] * 3)
    assert sorted(moves.sum(dim=1).tolist()) == expected
    assert (moves.abs().sum(dim=0) == torch.tensor([4.0] * 3 + [10.0] * 3, dtype=torch.float64)).all()


def test_landscape_features_by_hand():
    # centre 0.9; axis 0 loses 0.1 and 0.3, axis 1 gains 0.1 on one side and loses 0.1, the others lose 0.2
    scores = torch.tensor([0.9, 0.8, 0.6, 1.0, 0.8] + [0.7] * 8, dtype=torch.float64)
    similarity, drop, worst, lower = landscape_features(scores)
    assert similarity == pytest.approx(0.9)
    assert drop == pytest.approx((0.1 + 0.3 - 0.1 + 0.1 + 8 * 0.2) / 12)
    assert worst == pytest.approx(0.0)  # axis 1: (-0.1 + 0.1) / 2
    assert lower == pytest.approx(11 / 12)


def test_landscape_leaves_out_moves_that_lost_the_spine():
    # centre 0.5; axis 0's moves scored 0 (the spine left what the X-ray shows), axis 1 lost one of two,
    # the others lose 0.1 each: the drops are the seen moves' only
    scores = torch.tensor([0.5, 0.0, 0.0, 0.0, 0.3] + [0.4] * 8, dtype=torch.float64)
    similarity, drop, worst, lower = landscape_features(scores)
    assert unseen_probes(scores) == 3
    assert similarity == pytest.approx(0.5)
    assert drop == pytest.approx((0.2 + 8 * 0.1) / 9)
    assert worst == pytest.approx(0.1)  # axis 0 unjudged; axis 1 0.2 from its one seen move
    assert lower == pytest.approx(1.0)
    assert combine(similarity, drop) < combine(similarity, float((0.5 - scores[1:]).mean()))  # the zeros no longer inflate it
    nothing_seen = torch.tensor([0.5] + [0.0] * 12, dtype=torch.float64)
    assert unseen_probes(nothing_seen) == 12 and combine(*landscape_features(nothing_seen)[:2]) == 0.0
    # a result that scores 0 itself: its moves' zeros are ordinary drops of 0
    flat = torch.zeros(13, dtype=torch.float64)
    assert unseen_probes(flat) == 0 and landscape_features(flat)[1] == 0.0


def test_auroc_by_hand():
    assert auroc([0.9, 0.8, 0.3, 0.1], [True, True, False, False]) == pytest.approx(1.0)
    assert auroc([0.1, 0.3, 0.8, 0.9], [True, True, False, False]) == pytest.approx(0.0)
    # positives 0.5, 0.7 against negatives 0.5, 0.6: pairs won 0.5 (tie) + 0 + 1 + 1 of 4
    assert auroc([0.5, 0.7, 0.5, 0.6], [True, True, False, False]) == pytest.approx(2.5 / 4)
    assert auroc([0.5, 0.6], [True, True]) != auroc([0.5, 0.6], [True, True])  # NaN: no negatives


def test_summarise_reports_confidence_by_hand():
    base = {"method": "m", "paper_rotation_deg": 1.0, "paper_translation_mm": 1.0, "rotation_deg": 1.0,
            "translation_at_isocenter_mm": 1.0, "mtre_mm": 1.0, "projection_distance_mm": 1.0, "time_s": 1.0}
    cases = [(False, 0.9, False), (False, 0.7, False), (True, 0.8, True), (True, 0.2, True), (True, 0.6, False)]
    rows = [{**base, "failed": failed, "confidence": c, "likely_failed": flag} for failed, c, flag in cases]
    stats = summarise(rows)["m"]
    # successes 0.9, 0.7 against failures 0.8, 0.2, 0.6: 3 + 2 = 5 of 6 pairs
    assert stats["confidence_auroc"] == pytest.approx(5 / 6)
    assert stats["failed_not_flagged"] == pytest.approx(1 / 3)
    assert stats["success_flagged"] == pytest.approx(0.0)
    assert stats["failed_cases"] == 3


def _phantom() -> tuple[Volume, Volume]:
    """A 32^3 block of soft tissue holding an asymmetric 'spine' of three bony boxes and a rod."""
    data = torch.zeros(32, 32, 32)
    data[4:28, 6:26, 6:26] = 0.02  # soft tissue (1/mm)
    for k0, j0, i0 in ((6, 14, 12), (14, 15, 14), (22, 13, 15)):
        data[k0:k0 + 5, j0:j0 + 5, i0:i0 + 6] = 0.06
    data[8:24, 20:22, 20:22] = 0.05
    volume = Volume(data, world_from_index_affine((-62.0, -62.0, -62.0), (4.0, 4.0, 4.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    return volume, volume.with_data((data > 0.04).to(torch.uint8))


def test_confidence_high_at_the_true_pose_low_at_a_wrong_one():
    volume, spine = _phantom()
    view = nominal_view("ap", volume.center_world, TINY.source_to_isocenter_mm)
    truth = torch.tensor([3.0, -2.0, 4.0, 5.0, -4.0, 10.0], dtype=torch.float64)
    from sopi.drr import Projector

    with torch.no_grad():
        xray = Projector(volume, TINY)(view.pose(truth[None]))[0]
    problem = PoseProblem(volume, xray, TINY, view.camera_from_world, view.isocenter_world, mask=spine)
    right = assess(problem, truth, factor=1)
    wrong = assess(problem, truth + torch.tensor([12.0, -10.0, 15.0, 25.0, 20.0, -40.0], dtype=torch.float64), factor=1)
    assert right.similarity > 0.95 and right.lower_fraction == 1.0
    assert 0.0 <= wrong.confidence < 0.5 < right.confidence <= 1.0
    assert not right.likely_failed and wrong.likely_failed
    assert right.details()["similarity_gc"] == pytest.approx(right.similarity, abs=1e-4)


def test_the_model_is_the_logistic_of_its_cues_and_can_be_chosen():
    import math

    from sopi.registration.confidence import COEFFICIENTS, START_COEFFICIENTS

    volume, spine = _phantom()
    view = nominal_view("ap", volume.center_world, TINY.source_to_isocenter_mm)
    truth = torch.tensor([2.0, 1.0, -3.0, 4.0, 2.0, -6.0], dtype=torch.float64)
    from sopi.drr import Projector

    with torch.no_grad():
        xray = Projector(volume, TINY)(view.pose(truth[None]))[0]
    problem = PoseProblem(volume, xray, TINY, view.camera_from_world, view.isocenter_world, mask=spine)
    for coefficients in (None, COEFFICIENTS, START_COEFFICIENTS):
        result = assess(problem, truth + 1.5, factor=1, coefficients=coefficients)
        c = COEFFICIENTS if coefficients is None else coefficients
        z = c["bias"] + c["similarity"] * result.similarity + c["drop"] * result.drop
        assert result.confidence == pytest.approx(1.0 / (1.0 + math.exp(-z)), rel=1e-9)
        assert result.likely_failed == (result.confidence < 0.5)


def test_a_result_with_the_spine_mostly_off_the_detector_is_flagged_however_well_it_matches():
    """The X-ray is a DRR at a pose 60 or 70 mm to the side, where part or a sliver of the spine remains on the
    detector: the logistic model trusts the perfect match there, the spine-in-view check caps it below the flag in
    proportion (at 60 mm the spine is still shown: not wrong for sure, only not trusted); 40 mm to the side the spine
    is still well in view and the model's confidence stands."""
    from sopi.drr import Projector
    from sopi.registration.confidence import LIKELY_FAILED_BELOW, MIN_SPINE_IN_VIEW, TRUST_SPINE_IN_VIEW, combine, shows_spine, spine_in_view

    volume, spine = _phantom()
    view = nominal_view("ap", volume.center_world, TINY.source_to_isocenter_mm)
    results = {}
    shifts = (0.0, 40.0, 60.0, 70.0)
    for shift_mm in shifts:
        truth = torch.tensor([0.0, 0.0, 0.0, shift_mm, 0.0, 0.0], dtype=torch.float64)
        with torch.no_grad():
            xray = Projector(volume, TINY)(view.pose(truth[None]))[0]
        problem = PoseProblem(volume, xray, TINY, view.camera_from_world, view.isocenter_world, mask=spine)
        assessment = assess(problem, truth, factor=1)
        results[shift_mm] = (assessment, combine(assessment.similarity, assessment.drop))
        if shift_mm == 0.0:
            assert spine_in_view(problem, truth, 1) == pytest.approx(1.0)  # the start itself
    in_view = [results[shift][0].spine_in_view for shift in shifts]
    assert in_view[0] > in_view[1] > TRUST_SPINE_IN_VIEW > in_view[2] > MIN_SPINE_IN_VIEW > in_view[3] > 0.0
    for shift, (assessment, model) in results.items():
        assert assessment.similarity > 0.99 and model > 0.9  # every X-ray matches perfectly at its own pose
        if shift < 60.0:
            assert assessment.confidence == model and not assessment.likely_failed
    for shift in (60.0, 70.0):
        capped = results[shift][0]
        assert capped.confidence == pytest.approx(LIKELY_FAILED_BELOW * capped.spine_in_view / TRUST_SPINE_IN_VIEW, rel=1e-12)
        assert capped.likely_failed and capped.details()["spine_in_view"] == pytest.approx(capped.spine_in_view, abs=1e-3)
    assert shows_spine(results[60.0][0].spine_in_view) and not shows_spine(results[70.0][0].spine_in_view)
    without_mask = PoseProblem(volume, torch.zeros(TINY.shape), TINY, view.camera_from_world, view.isocenter_world)
    assert spine_in_view(without_mask, torch.zeros(6, dtype=torch.float64), 1) is None


def test_the_spine_in_view_cap_by_hand():
    """Trusted from 0.6 of the start's spine (TRUST_SPINE_IN_VIEW), capped below the flag in proportion under it; shown
    (not wrong for sure: shows_spine) from 0.3 (MIN_SPINE_IN_VIEW)."""
    from sopi.registration.confidence import capped_by_spine_in_view, shows_spine

    assert capped_by_spine_in_view(0.9, None) == 0.9  # no mask, no check
    assert capped_by_spine_in_view(0.9, 0.6) == 0.9 and capped_by_spine_in_view(0.9, 1.4) == 0.9
    assert capped_by_spine_in_view(0.9, 0.3) == pytest.approx(0.25)  # half the threshold: half the flag's level
    assert capped_by_spine_in_view(0.9, 0.59) == pytest.approx(0.5 * 0.59 / 0.6) and 0.5 * 0.59 / 0.6 < 0.5  # just under: flagged
    assert capped_by_spine_in_view(0.9, 0.0) == 0.0
    assert capped_by_spine_in_view(0.1, 0.2) == 0.1  # a cap, never a raise
    assert shows_spine(0.3) and shows_spine(0.59) and not shows_spine(0.29) and shows_spine(None)


@pytest.mark.parametrize("with_mask, separate", [(True, False), (True, True), (False, False)])
def test_probe_renders_counts_the_drrs_an_assessment_renders(monkeypatch, with_mask, separate):
    """``probe_renders`` against the DRRs ``assess`` actually renders (every projector call's batch, counted): the
    CT's 13 with the mask's projection (a second channel, or beside them from the mask's own projector), and the
    mask's projection at the result and the start."""
    from sopi.drr import Projector
    from sopi.registration.confidence import PROBE_RENDERS, probe_renders
    from sopi.registration.problem import SharedProjectors

    monkeypatch.setattr(SharedProjectors, "SEPARATE_MASK_BELOW", 1.0 if separate else 0.0)
    volume, spine = _phantom()
    view = nominal_view("ap", volume.center_world, TINY.source_to_isocenter_mm)
    with torch.no_grad():
        xray = Projector(volume, TINY)(view.pose(torch.zeros(1, 6, dtype=torch.float64)))[0]
    problem = PoseProblem(volume, xray, TINY, view.camera_from_world, view.isocenter_world, mask=spine if with_mask else None)
    rendered = {"ct": 0, "mask alone": 0}
    forward = Projector.forward

    def counted(self, poses):
        rendered["ct" if float(self.volume[0, 0].max()) < 1.0 else "mask alone"] += poses.reshape(-1, 4, 4).shape[0]
        return forward(self, poses)

    monkeypatch.setattr(Projector, "forward", counted)
    assess(problem, torch.tensor([1.0, -1.0, 2.0, 3.0, 1.0, -4.0], dtype=torch.float64))
    if separate:
        assert rendered == {"ct": 13, "mask alone": 13 + 2}
    else:
        assert rendered == {"ct": 13 + (2 if with_mask else 0), "mask alone": 0}
    assert probe_renders(problem) == (PROBE_RENDERS if with_mask else PROBE_RENDERS - 2) == 13 + (2 if with_mask else 0)
