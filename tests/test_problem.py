"""The render-and-compare objective: the spine region held at one pose (PoseProblem.hold_region)."""

from __future__ import annotations

import pytest
import torch

from sopi.drr import Projector
from sopi.errors import Cancelled
from sopi.filters import dilate
from sopi.geometry import CArmGeometry, nominal_view
from sopi.registration.api import _run_stage
from sopi.registration.methods import Stage
from sopi.registration.optimizers import Monitor
from sopi.registration.problem import PoseProblem
from sopi.similarity import SIMILARITIES
from sopi.volume import Volume, world_from_index_affine

DETECTOR = CArmGeometry(1011.7, 40, 40, (4.0, 4.0), source_to_isocenter_mm=675.0)


def _scene() -> tuple[PoseProblem, Volume, Volume, object]:
    """Soft tissue holding two bony blocks (the 'spine'), an X-ray of it 4 mm off in depth."""
    data = torch.zeros(24, 24, 24)
    data[2:22, 4:20, 4:20] = 0.02
    data[5:11, 9:14, 8:15] = 0.07
    data[13:20, 10:15, 9:14] = 0.06
    volume = Volume(data, world_from_index_affine((-46.0, -46.0, -46.0), (4.0, 4.0, 4.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    spine = volume.with_data((data > 0.05).to(torch.uint8))
    view = nominal_view("ap", volume.center_world, DETECTOR.source_to_isocenter_mm)
    truth = torch.tensor([[2.0, -1.0, 3.0, 2.0, -3.0, 4.0]], dtype=torch.float64)
    with torch.no_grad():
        xray = Projector(volume, DETECTOR)(view.pose(truth))[0]
    return PoseProblem(volume, xray, DETECTOR, view.camera_from_world, view.isocenter_world, mask=spine), volume, spine, view


def _depths(values: list[float]) -> torch.Tensor:
    theta = torch.zeros(len(values), 6, dtype=torch.float64)
    theta[:, 5] = torch.tensor(values, dtype=torch.float64)
    return theta


def _record_while_scoring(problem: PoseProblem, attribute: str) -> list:
    """A list that gets ``problem.<attribute>`` (a held pose) every time ``problem.similarity`` is called."""
    seen, original = [], problem.similarity

    def spy(theta, factor, measure):
        seen.append(getattr(problem, attribute))
        return original(theta, factor, measure)

    problem.similarity = spy
    return seen


def test_a_held_region_weights_every_candidate_by_the_spine_at_the_held_pose():
    problem, volume, spine, view = _scene()
    held = torch.tensor([1.0, 0.0, -2.0, 3.0, 1.0, -6.0], dtype=torch.float64)
    candidates = _depths([-8.0, 0.0, 5.0, 12.0])
    problem.hold_region(held)
    with torch.no_grad():
        got = problem.similarity(candidates, 1, "gc")
        # a second path: the attenuation and the mask rendered apart, the region built by hand
        drrs = Projector(volume, DETECTOR)(view.pose(candidates))
        region = Projector(spine.with_data(spine.data.float()), DETECTOR)(view.pose(held[None]))[0]
        weights = dilate(region > 0, problem.mask_dilation_px).float()
        expected = SIMILARITIES["gc"](problem.xray.expand_as(drrs), drrs, weights.expand_as(drrs)).double()
    assert torch.allclose(got, expected, atol=1e-5)
    problem.hold_region(None)  # released: each candidate's own region again, so other values
    with torch.no_grad():
        assert not torch.allclose(problem.similarity(candidates, 1, "gc"), got, atol=1e-3)


def test_holding_the_region_at_a_candidates_own_pose_changes_nothing():
    problem, *_ = _scene()
    for depth in (-7.0, 3.0):
        theta = _depths([depth])
        with torch.no_grad():
            free = problem.similarity(theta, 1, "gc")
            problem.hold_region(theta[0])
            held = problem.similarity(theta, 1, "gc")
            problem.hold_region(None)
        assert torch.allclose(free, held, atol=1e-6)


def test_a_stage_holds_the_region_only_while_it_runs_even_when_cancelled():
    problem, *_ = _scene()
    seen = _record_while_scoring(problem, "_held_theta")
    start = _depths([2.0])[0]
    stage = Stage("adam", "gc", 1, (1.0, 2.0), 3, hold_region=True)
    _run_stage(problem, stage, start, 0, Monitor(None, None, 0.0, 1.0, ""))
    assert seen and all(torch.equal(held[0], start) for held in seen)
    assert problem._held_theta is None
    with pytest.raises(Cancelled):
        _run_stage(problem, stage, start, 0, Monitor(None, lambda: True, 0.0, 1.0, ""))
    assert problem._held_theta is None
    seen.clear()
    _run_stage(problem, Stage("adam", "gc", 1, (1.0, 2.0), 2), start, 0, Monitor(None, None, 0.0, 1.0, ""))
    assert seen and all(held is None for held in seen)


@pytest.mark.parametrize("contrast,scatter", [(1.0, 0.0), (1.5, 0.0), (0.75, 1.0)])
def test_bone_contrast_and_scatter_are_recovered_from_an_xray_that_has_them(contrast, scatter):
    from sopi.preprocess import MU_WATER_PER_MM
    from sopi.registration.problem import with_scatter

    _, volume, spine, view = _scene()
    soft_ceiling = MU_WATER_PER_MM * (1.0 + PoseProblem.BONE_ABOVE_HU / 1000.0)
    assert 0.02 < soft_ceiling < 0.06  # the blocks are bone, the surrounding tissue is not
    truth = torch.zeros(1, 6, dtype=torch.float64)
    excess = (volume.data - soft_ceiling).clamp_min(0.0)
    with torch.no_grad():
        xray = Projector(volume.with_data(volume.data + (contrast - 1.0) * excess), DETECTOR)(view.pose(truth))
    if scatter:
        xray = with_scatter(xray, scatter, 40.0 / DETECTOR.pixel_spacing_mm[0])
    problem = PoseProblem(volume, xray[0], DETECTOR, view.camera_from_world, view.isocenter_world, mask=spine)
    assert problem.estimate_bone_contrast(truth[0], 1, "gc") == contrast
    assert problem.scatter_to_primary == scatter
    # the problem now renders the X-ray it was given
    assert float(problem.similarity(truth, 1, "ncc")[0]) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(spine.data, problem.mask.data)  # the mask is untouched


def test_a_pose_that_moves_the_spine_out_of_what_the_xray_shows_scores_zero():
    problem, volume, spine, view = _scene()
    truth = torch.tensor([[2.0, -1.0, 3.0, 2.0, -3.0, 4.0]], dtype=torch.float64)
    shown = torch.zeros(DETECTOR.shape)
    shown[:, :20] = 1.0  # the X-ray shows its left half only (a collimator blade over the right half)
    problem.restrict_weight(shown)
    level = problem.level(1)
    with torch.no_grad():
        rendered, projected = problem._render(level, truth)
    region = dilate(projected > 0, problem.mask_dilation_px)
    seen = float((region & (level.weight > 0)).sum() / region.sum())
    assert 0.3 < seen < 0.7  # at the truth the spine straddles the blade's edge
    expected = SIMILARITIES["gc"](level.fixed[None], rendered, region.to(rendered.dtype) * level.weight)
    assert float(problem.similarity(truth, 1, "gc")[0]) == pytest.approx(float(expected[0]), abs=1e-6)
    behind_blade = truth.clone()
    behind_blade[0, 3] += 45.0  # 45 mm to the side: the spine's projection lies under the blade
    with torch.no_grad():
        moved = dilate(problem._render(level, behind_blade)[1] > 0, problem.mask_dilation_px)
    assert float((moved & (level.weight > 0)).sum() / moved.sum()) < PoseProblem.MIN_SEEN_FRACTION
    assert float(problem.similarity(behind_blade, 1, "gc")[0]) == 0.0
    unmasked, _, _, _ = _scene()  # without the blade the same pose is scored as usual
    assert float(unmasked.similarity(behind_blade, 1, "gc")[0]) != 0.0


def test_a_pose_that_projects_the_spine_off_the_detector_scores_zero_however_well_other_bone_matches():
    """The X-ray shows another bone 130 mm to the side of the spine (a hip) and no spine. Scored on the whole
    image, as before, the pose it was taken at is a perfect match (gradient correlation 1); with the spine
    mask it explains nothing of a spine X-ray and scores 0, with or without an X-ray weight."""
    from sopi.segment import mask_centroid_world

    data = torch.zeros(16, 16, 48)
    data[2:14, 3:13, :] = 0.02
    data[4:12, 6:10, 3:8] = 0.07  # the spine, at the volume's left end
    data[5:10, 5:11, 36:44] = 0.06  # another bone, 130 mm to its side
    data[6:8, 6:9, 38:41] = 0.09
    volume = Volume(data, world_from_index_affine((-94.0, -30.0, -30.0), (4.0, 4.0, 4.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    spine = volume.with_data((data == 0.07).to(torch.uint8))
    view = nominal_view("ap", mask_centroid_world(spine), DETECTOR.source_to_isocenter_mm)
    aside = torch.tensor([[0.0, 0.0, 0.0, -130.0, 0.0, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        xray = Projector(volume, DETECTOR)(view.pose(aside))[0]
    without_mask = PoseProblem(volume, xray, DETECTOR, view.camera_from_world, view.isocenter_world)
    assert float(without_mask.similarity(aside, 1, "gc")[0]) == pytest.approx(1.0, abs=1e-6)
    problem = PoseProblem(volume, xray, DETECTOR, view.camera_from_world, view.isocenter_world, mask=spine)
    with torch.no_grad():
        assert float(problem._render(problem.level(1), aside)[1].sum()) == 0.0  # the spine projects off the detector
    assert float(problem.similarity(aside, 1, "gc")[0]) == 0.0
    problem.restrict_weight(torch.ones(DETECTOR.shape))  # with an X-ray weight too
    assert float(problem.similarity(aside, 1, "gc")[0]) == 0.0
    assert float(problem.similarity(torch.zeros(1, 6, dtype=torch.float64), 1, "gc")[0]) > 0.0  # the start sees the spine


def test_the_depth_direction_moves_the_pivot_along_its_ray_and_keeps_its_image():
    """1 mm along :meth:`PoseProblem.depth_direction` takes the pivot 1 mm further from the source on the same
    ray: its projection stays on the same pixel while points off the pivot move radially (a pure scale)."""
    from sopi.geometry import project_points, transform_points

    problem, volume, _, _ = _scene()
    theta = torch.tensor([4.0, -3.0, 10.0, 25.0, -18.0, 30.0], dtype=torch.float64)  # the pivot well off the principal ray
    direction = problem.depth_direction(theta)
    assert torch.equal(direction[:3], torch.zeros(3, dtype=torch.float64))
    moved = theta + 7.0 * direction
    pivot = problem.pivot_world.to(torch.float64)[None]
    before, after = (transform_points(problem.pose(t), pivot)[0] for t in (theta, moved))
    assert float(after.norm() - before.norm()) == pytest.approx(7.0, abs=1e-9)  # the source is the camera's origin
    assert torch.allclose(project_points(problem.pose(moved), DETECTOR, pivot), project_points(problem.pose(theta), DETECTOR, pivot), atol=1e-9)
    corner = torch.as_tensor(volume.center_world, dtype=torch.float64).reshape(1, 3) + torch.tensor([[30.0, 20.0, -10.0]], dtype=torch.float64)
    shift = project_points(problem.pose(moved), DETECTOR, corner) - project_points(problem.pose(theta), DETECTOR, corner)
    assert float(shift.norm()) > 0.05  # the rest of the image does change (it shrinks towards the pivot)


def test_a_depth_scan_stage_finds_the_depth_of_an_xray_taken_deeper():
    """The X-ray is the DRR at the true pose; a ``depth-scan`` stage started at the truth moved 5 mm along the
    pivot's ray comes back to within a millimetre of the truth, using 17 + 1 renders."""
    problem, _, _, _ = _scene()
    truth = torch.tensor([2.0, -1.0, 3.0, 2.0, -3.0, 4.0], dtype=torch.float64)
    start = truth + 5.0 * problem.depth_direction(truth)
    stage = Stage("depth-scan", "gc", 1, (1.0, 1.0), 8, hold_region=True)
    result = _run_stage(problem, stage, start, 0, Monitor())
    assert float((result.theta - truth).norm()) < 1.0
    assert result.evaluations in (17, 18)
    assert -result.loss >= float(problem.similarity(start[None], 1, "gc")[0])


def test_a_levels_ray_step_follows_its_pixel_size_not_its_factor():
    """A 512-pixel detector's level 4 has the pixels of a 256-pixel detector's level 2, so it marches at the same
    step; detectors of 256 pixels or fewer keep ``step_mm * factor``; the cap is 3 mm; full resolution keeps
    ``step_mm`` (a large X-ray is registered binned to 512 pixels, sopi.io_xray.working_xray)."""
    _, volume, spine, view = _scene()
    steps = {}
    for pixels in (96, 256, 512):
        geometry = CArmGeometry(1011.7, pixels, pixels, (1024.0 / pixels, 1024.0 / pixels), source_to_isocenter_mm=675.0)
        problem = PoseProblem(volume, torch.zeros(pixels, pixels), geometry, view.camera_from_world, view.isocenter_world, mask=spine)
        steps[pixels] = {factor: problem.level(factor).projector.step_mm for factor in (1, 2, 4, 8)}
    assert steps[96] == steps[256] == {1: 1.0, 2: 2.0, 4: 3.0, 8: 3.0}
    assert steps[512] == {1: 1.0, 2: 1.0, 4: 2.0, 8: 3.0}


def _crop_scene() -> tuple[PoseProblem, Volume, Volume, object, torch.Tensor]:
    """A crop whose soft tissue fills the grid from side to side and top to bottom (the body goes on beyond it),
    two bony blocks in the middle, and an X-ray of the longer, wider body the crop was taken from."""
    body = torch.zeros(40, 24, 40)  # k, j, i: 8 more slices at each end and 8 more columns at each side
    body[:, 4:20, :] = 0.02
    body[13:19, 9:14, 16:23] = 0.07
    body[21:28, 10:15, 17:22] = 0.06
    body[2:6, 8:16, 12:28] = 0.08  # anatomy beyond the crop's first slice
    body[30:38, 6:18, 20:26] = 0.05
    crop = body[8:32, :, 8:32].clone()
    affine = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    volume = Volume(crop, world_from_index_affine((-46.0, -46.0, -46.0), (4.0, 4.0, 4.0), affine))
    patient = Volume(body, world_from_index_affine((-78.0, -46.0, -78.0), (4.0, 4.0, 4.0), affine))
    spine = volume.with_data((crop > 0.05).to(torch.uint8))
    view = nominal_view("ap", volume.center_world, DETECTOR.source_to_isocenter_mm)
    truth = torch.tensor([[1.0, -2.0, 1.5, 2.0, 1.0, -3.0]], dtype=torch.float64)
    with torch.no_grad():
        xray = Projector(patient, DETECTOR)(view.pose(truth))[0]
    problem = PoseProblem(volume, xray, DETECTOR, view.camera_from_world, view.isocenter_world, mask=spine)
    return problem, volume, spine, view, truth


def test_held_ct_edges_leave_out_the_pixels_whose_rays_the_crop_cuts():
    from sopi.registration.problem import CT_TISSUE_PER_MM

    problem, volume, spine, view, truth = _crop_scene()
    candidates = torch.cat([truth, truth + torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 5.0]], dtype=torch.float64)])
    with torch.no_grad():
        free = problem.similarity(candidates, 1, "gc")
        problem.hold_ct_edges(truth[0])
        held = problem.similarity(candidates, 1, "gc")
        # a second path: the weights built by hand from the cut rays at the held pose
        projector = Projector(volume, DETECTOR)
        cut = projector.truncated_rays(view.pose(truth), CT_TISSUE_PER_MM)[0]
        kept = ~dilate(cut, PoseProblem.CT_EDGE_MARGIN_PX)
        drrs = projector(view.pose(candidates))
        regions = Projector(spine.with_data(spine.data.float()), DETECTOR)(view.pose(candidates)) > 0
        weights = dilate(regions, problem.mask_dilation_px).float() * kept.float()
        expected = SIMILARITIES["gc"](problem.xray.expand_as(drrs), drrs, weights).double()
    assert cut.any() and kept.any()
    assert torch.allclose(held, expected, atol=1e-5)
    assert float(held[0]) > float(free[0]) + 0.01  # the anatomy beyond the crop no longer counts against the truth
    # what the X-ray shows along the rays the crop cuts does not count at all while held
    altered = problem.xray.clone()
    altered[cut] += 5.0 * torch.rand(int(cut.sum()), generator=torch.Generator().manual_seed(0))
    other = PoseProblem(volume, altered, DETECTOR, view.camera_from_world, view.isocenter_world, mask=spine)
    with torch.no_grad():
        other.hold_ct_edges(truth[0])
        assert torch.allclose(other.similarity(candidates, 1, "gc"), held, atol=1e-5)
        other.hold_ct_edges(None)
        assert not torch.allclose(other.similarity(candidates, 1, "gc"), free, atol=1e-3)


def test_ct_edges_stay_in_where_leaving_them_out_would_leave_too_little_of_the_spine(monkeypatch):
    problem, *_, truth = _crop_scene()
    monkeypatch.setattr(PoseProblem, "CT_EDGE_MIN_KEPT", 1.0)  # any pixel of the spine's region left out is too many
    with torch.no_grad():
        free = problem.similarity(truth, 1, "gc")
        problem.hold_ct_edges(truth[0])
        assert torch.allclose(problem.similarity(truth, 1, "gc"), free, atol=1e-7)


def test_a_stage_that_asks_holds_the_ct_edges_at_its_start_and_releases_them():
    problem, *_, truth = _crop_scene()
    seen = _record_while_scoring(problem, "_edge_theta")
    start = truth[0] + 1.0
    _run_stage(problem, Stage("adam", "gc", 1, (1.0, 2.0), 3, hold_ct_edges=True), start, 0, Monitor(None, None, 0.0, 1.0, ""))
    assert seen and all(torch.equal(held[0], start) for held in seen)
    assert problem._edge_theta is None
    seen.clear()  # a stage that does not ask (opt's CMA-ES, which may end tens of mm from its start) holds nothing
    _run_stage(problem, Stage("cma-es", "gc", 1, (1.0, 2.0), 2, population=4), start, 0, Monitor(None, None, 0.0, 1.0, ""))
    assert seen and all(held is None for held in seen)


def test_problems_sharing_projectors_reuse_the_blended_slices_and_score_alike():
    """Two problems of one registration (its passes) with the same SharedProjectors render through copies of one
    projector: the second blends nothing again, and both score exactly as a problem with projectors of its own.
    New voxels (another tensor) get a projector of their own."""
    from sopi.registration.problem import SharedProjectors

    problem, volume, spine, view = _scene()
    shared = SharedProjectors()
    theta = _depths([-4.0, 0.0, 3.0])

    def made(voxels: Volume) -> PoseProblem:
        return PoseProblem(voxels, problem.xray, DETECTOR, view.camera_from_world, view.isocenter_world, mask=spine, projectors=shared)

    first, second = made(volume), made(volume)
    expected = problem.similarity(theta, 1, "gc")
    assert torch.equal(first.similarity(theta, 1, "gc"), expected)
    assert first.level(1).projector._slice_cache is second.level(1).projector._slice_cache
    cached = dict(first.level(1).projector._slice_cache)
    assert torch.equal(second.similarity(theta, 1, "gc"), expected)
    assert all(second.level(1).projector._slice_cache[key] is value for key, value in cached.items())
    search = first.attenuation_projector(DETECTOR.resized(60, 60), 2.0)
    assert search.volume.shape[1] == 1 and second.attenuation_projector(DETECTOR, 2.0)._slice_cache is search._slice_cache
    moved = volume.with_data(volume.data.roll(3, dims=0))
    other = made(moved)
    assert other.level(1).projector._slice_cache is not first.level(1).projector._slice_cache
    alone = PoseProblem(moved, problem.xray, DETECTOR, view.camera_from_world, view.isocenter_world, mask=spine)
    assert torch.equal(other.similarity(theta, 1, "gc"), alone.similarity(theta, 1, "gc"))
    assert not torch.equal(alone.similarity(theta, 1, "gc"), expected)


def test_a_coarse_voxel_size_renders_the_block_averaged_volume_once_for_every_problem_sharing_it():
    """``attenuation_projector(..., voxel_mm)`` (the global search's): the DRR of the CT block-averaged to at most
    that voxel size, exactly as a projector of that binned volume renders it; built once for problems sharing the
    projectors; close to the full volume's DRR (the blocks' means are what coarse pixels average); a voxel size the
    CT already meets renders the volume itself."""
    from sopi.registration.problem import SharedProjectors
    from sopi.render import binned_volume

    fine = torch.zeros(48, 48, 48)
    fine[4:44, 8:40, 8:40] = 0.02
    fine[10:22, 18:28, 16:30] = 0.07
    fine[26:40, 20:30, 18:28] = 0.06
    volume = Volume(fine, world_from_index_affine((-47.0, -47.0, -47.0), (2.0, 2.0, 2.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    view = nominal_view("ap", volume.center_world, DETECTOR.source_to_isocenter_mm)
    shared = SharedProjectors()
    made = [PoseProblem(volume, torch.zeros(DETECTOR.shape), DETECTOR, view.camera_from_world, view.isocenter_world, projectors=shared)
            for _ in range(2)]
    poses = made[0].pose(torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [12.0, -20.0, 5.0, 3.0, -2.0, 10.0]], dtype=torch.float64))
    with torch.no_grad():
        coarse = made[0].attenuation_projector(DETECTOR, 3.0, voxel_mm=5.0)
        assert tuple(coarse.volume.shape[2:]) == (24, 24, 24)  # 2 mm voxels binned by 2 (by 3 would pass 5 mm)
        expected = Projector(binned_volume(volume, (2, 2, 2)), DETECTOR, step_mm=3.0)(poses)
        assert torch.allclose(coarse(poses), expected, rtol=1e-5, atol=1e-6)
        assert made[1].attenuation_projector(DETECTOR, 3.0, voxel_mm=5.0)._slice_cache is coarse._slice_cache
        full = made[0].attenuation_projector(DETECTOR, 3.0)(poses)
        assert coarse.volume.shape != made[0].attenuation_projector(DETECTOR, 3.0).volume.shape
        a, b = expected.flatten(1) - expected.flatten(1).mean(1, keepdim=True), full.flatten(1) - full.flatten(1).mean(1, keepdim=True)
        assert bool(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)) > 0.995).all())  # 0.9985 and 0.9998
        assert float((expected - full).abs().mean()) < 0.03 * float(full.mean())  # 1.8 %: the blocks' edges blur
        assert torch.equal(made[0].attenuation_projector(DETECTOR, 3.0, voxel_mm=2.5)(poses), full)


def test_a_mask_rendered_with_its_own_projector_scores_as_a_second_channel_does(monkeypatch):
    """The two ways a level renders the spine mask (SharedProjectors.separate_mask): as a second channel of the CT's
    projector, or with a projector of its own on the CT's planes. Similarities (region recomputed and held), their
    pose gradients and the spine coverage agree; the choice follows the mask's share of the CT's support box."""
    from sopi.drr import support_box_fraction
    from sopi.registration.problem import SharedProjectors

    problem, volume, spine, view = _scene()
    theta = torch.tensor([[1.0, -2.0, 1.5, 3.0, -1.0, 4.0], [-2.0, 1.0, 0.0, -4.0, 2.0, -6.0]], dtype=torch.float64)
    fraction = support_box_fraction(spine.data, volume.data)
    assert 0.0 < fraction < 1.0
    results = {}
    for separate, below in ((True, 1.0), (False, 0.0)):
        monkeypatch.setattr(SharedProjectors, "SEPARATE_MASK_BELOW", below)
        made = PoseProblem(volume, problem.xray, DETECTOR, view.camera_from_world, view.isocenter_world, mask=spine)
        level = made.level(1)
        assert (level.spine is not None) == separate and level.projector.volume.shape[1] == (1 if separate else 2)
        moving = theta.clone().requires_grad_()
        scores = made.similarity(moving, 1, "gc")
        (gradient,) = torch.autograd.grad(scores.sum(), moving)
        made.hold_region(theta[1])
        held = made.similarity(theta, 1, "gc")
        made.hold_region(None)
        results[separate] = (scores.detach(), gradient, held, made.spine_coverage(theta, 1))
    for ours, theirs in zip(results[True], results[False]):
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert float(results[True][3].min()) > 0.05  # the spine is in view: the coverage compared something
    assert not torch.allclose(results[True][0], results[True][2])  # holding the region changed the scores
    monkeypatch.setattr(SharedProjectors, "SEPARATE_MASK_BELOW", fraction)  # at the fraction itself: a second channel
    assert not SharedProjectors().separate_mask(volume, spine)
    monkeypatch.setattr(SharedProjectors, "SEPARATE_MASK_BELOW", fraction * 1.01)
    assert SharedProjectors().separate_mask(volume, spine)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_mask_with_its_own_projector_scores_on_cuda_as_on_the_cpu(monkeypatch):
    """The mask's own projector takes its planes from a CT projector already on the GPU."""
    from sopi.registration.problem import SharedProjectors

    monkeypatch.setattr(SharedProjectors, "SEPARATE_MASK_BELOW", 1.0)
    problem, volume, spine, view = _scene()
    theta = _depths([-4.0, 0.0, 3.0])
    on_gpu = PoseProblem(volume, problem.xray, DETECTOR, view.camera_from_world, view.isocenter_world, mask=spine,
                         device=torch.device("cuda"))
    assert on_gpu.level(1).spine is not None
    assert torch.allclose(on_gpu.similarity(theta, 1, "gc"), problem.similarity(theta, 1, "gc"), atol=1e-4)


def test_a_held_window_scores_as_the_whole_detector_does_on_fewer_pixels():
    """``PoseProblem.hold_window``: the level renders only the box of the pixels that count at the held pose (plus a
    margin), with the whole detector's scatter held there. Near that pose it scores and differentiates as the whole
    detector does (a second computation of the same objective), and once released the whole level is back."""
    problem, volume, spine, view = _scene()
    wide = CArmGeometry(1011.7, 120, 120, (2.0, 2.0), source_to_isocenter_mm=675.0)
    truth = torch.tensor([[2.0, -1.0, 3.0, 2.0, -3.0, 4.0]], dtype=torch.float64)
    with torch.no_grad():
        xray = Projector(volume, wide)(view.pose(truth))[0]
    problem = PoseProblem(volume, xray, wide, view.camera_from_world, view.isocenter_world, mask=spine, scatter_to_primary=1.0)
    near = truth + torch.tensor([[0.0] * 6, [0.4, 0.0, 0.0, 0.0, 0.0, 1.0], [0.0, -0.3, 0.2, 0.5, 0.0, -1.5]], dtype=torch.float64)

    def scores_and_gradient() -> tuple[torch.Tensor, torch.Tensor]:
        moving = near.clone().requires_grad_(True)
        scores = problem.similarity(moving, 1, "gradient-ncc")
        scores[1].backward()
        return scores.detach(), moving.grad[1]

    whole, whole_gradient = scores_and_gradient()
    problem.hold_window(truth[0], 1)
    window = problem.level(1)
    assert window.fixed.numel() < PoseProblem.WINDOW_MAX_FRACTION * 120 * 120 and window.scatter is not None
    windowed, windowed_gradient = scores_and_gradient()
    assert torch.allclose(windowed, whole, atol=5e-4), (windowed, whole)
    assert torch.nn.functional.cosine_similarity(windowed_gradient, whole_gradient, dim=0) > 0.99
    problem.hold_window(None)
    assert tuple(problem.level(1).fixed.shape) == (120, 120)
    assert torch.equal(problem.similarity(near, 1, "gradient-ncc").detach(), whole)


def test_a_stage_that_asks_renders_within_a_window_held_where_it_starts_and_releases_it():
    problem, volume, spine, view = _scene()
    wide = CArmGeometry(1011.7, 120, 120, (2.0, 2.0), source_to_isocenter_mm=675.0)
    truth = torch.tensor([[2.0, -1.0, 3.0, 2.0, -3.0, 4.0]], dtype=torch.float64)
    with torch.no_grad():
        xray = Projector(volume, wide)(view.pose(truth))[0]
    problem = PoseProblem(volume, xray, wide, view.camera_from_world, view.isocenter_world, mask=spine)
    shapes, original = [], problem.similarity

    def spy(theta, factor, measure):
        shapes.append(tuple(problem.level(factor).fixed.shape))
        return original(theta, factor, measure)

    problem.similarity = spy
    _run_stage(problem, Stage("adam", "gradient-ncc", 1, (1.0, 2.0), 3, spine_window=True), truth[0], 0, Monitor(None, None, 0.0, 1.0, ""))
    assert shapes and len(set(shapes)) == 1 and shapes[0][0] * shapes[0][1] < 0.5 * 120 * 120
    assert problem._window is None and tuple(problem.level(1).fixed.shape) == (120, 120)
