"""Registration: optimisers on analytic problems, known-pose recovery, cancellation, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from sopi.cli import main
from sopi.distances import mean_projection_distance_mm, mtre_mm
from sopi.errors import Cancelled, InputError
from sopi.geometry import CArmGeometry, nominal_view, save_pose
from sopi.io import mask_from_labels, write_xray
from sopi.io_xray import XRay
from sopi.registration import register
from sopi.registration.methods import get_method
from sopi.registration.optimizers import AdamStep, Monitor, adam, cma_es, line_scan, powell
from sopi.render import render_drr, rendering_volume
from sopi.sample_data import load_sample, sample_ct_path, sample_vertebrae_path
from sopi.segment import bone_mask, mask_centroid_world
from sopi.volume import Volume

#: A small detector so a whole registration runs in seconds on two cores.
SMALL = CArmGeometry(1011.7, 96, 96, (2.4, 2.4), source_to_isocenter_mm=675.0)
OPTIMUM = torch.tensor([1.5, -2.0, 0.5, 3.0, -4.0, 6.0], dtype=torch.float64)
SCALE = torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], dtype=torch.float64)


def quadratic(theta: torch.Tensor) -> torch.Tensor:
    return ((theta - OPTIMUM) / SCALE).square().sum(-1)


@pytest.mark.parametrize("name", ["cma-es", "adam", "powell"])
def test_optimisers_find_the_minimum_of_a_quadratic(name):
    start = torch.zeros(6, dtype=torch.float64)
    if name == "cma-es":
        result = cma_es(quadratic, start, SCALE, generations=200, population=12, seed=3, tolerance=1e-10, patience=30)
    elif name == "adam":
        result = adam(quadratic, start, SCALE, iterations=600, learning_rate=0.05, tolerance=1e-10, patience=50)
    else:
        result = powell(quadratic, start, SCALE, evaluations=2000, tolerance=1e-10)
    assert torch.allclose(result.theta, OPTIMUM, atol=0.05)
    assert result.loss == pytest.approx(float(quadratic(result.theta)), abs=1e-9)


def test_adam_step_moves_like_torch_optim_adam():
    """The written-out update follows torch's own Adam step for step on a curved, anisotropic loss."""
    ours = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_(True)
    step, reference = AdamStep(ours, 0.07), torch.optim.Adam([theirs], lr=0.07)
    weights = torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64)
    for _ in range(40):
        for x in (ours, theirs):
            x.grad = None
            (weights * (x - 0.5).pow(4) + torch.sin(x).sum()).sum().backward()
        step()
        reference.step()
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    assert not torch.allclose(ours.detach(), torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64))


def test_cma_es_checkpoints_are_what_a_shorter_run_returns():
    start = torch.zeros(6, dtype=torch.float64)
    long = cma_es(quadratic, start, SCALE, generations=20, population=8, seed=5, patience=50, checkpoints=(4, 9, 30))
    for generations in (4, 9):
        short = cma_es(quadratic, start, SCALE, generations=generations, population=8, seed=5, patience=50)
        assert torch.equal(long.checkpoints[generations].theta, short.theta)
        assert long.checkpoints[generations].evaluations == short.evaluations == 8 * generations
    assert long.checkpoints[30] is long and float(quadratic(long.theta)) < float(quadratic(long.checkpoints[4].theta))


def test_cma_es_is_deterministic_for_a_seed():
    start = torch.zeros(6, dtype=torch.float64)
    first = cma_es(quadratic, start, SCALE, generations=5, seed=11)
    second = cma_es(quadratic, start, SCALE, generations=5, seed=11)
    other = cma_es(quadratic, start, SCALE, generations=5, seed=12)
    assert torch.equal(first.theta, second.theta) and not torch.equal(first.theta, other.theta)


def test_monitor_reports_progress_and_cancels():
    seen = []
    monitor = Monitor(progress=lambda fraction, message: seen.append(fraction), label="stage")
    adam(quadratic, torch.zeros(6, dtype=torch.float64), SCALE, iterations=5, monitor=monitor)
    assert seen == sorted(seen) and seen[-1] <= 1.0 and len(seen) == 5
    with pytest.raises(Cancelled):
        cma_es(quadratic, torch.zeros(6, dtype=torch.float64), SCALE, generations=5, monitor=Monitor(cancel=lambda: True))


@pytest.fixture(scope="module")
def sample_case():
    ct, labels = load_sample()
    spine = mask_from_labels(labels)
    nominal = nominal_view("ap", mask_centroid_world(spine), SMALL.source_to_isocenter_mm)
    theta = torch.tensor([2.0, -1.5, 2.5, 4.0, -3.0, 8.0], dtype=torch.float64)
    truth = nominal.pose(theta)
    image = render_drr(rendering_volume(ct, "hu"), SMALL, truth)
    return ct, spine, nominal, truth, image


def test_opt_recovers_a_known_pose(sample_case):
    ct, spine, nominal, truth, image = sample_case
    points = torch.nonzero(spine.data)[::200].flip(-1).double() @ spine.world_from_index[:3, :3].T + spine.world_from_index[:3, 3]
    initial_error = float(mtre_mm(nominal.camera_from_world, truth, points))
    fractions = []
    result = register(ct, XRay(image, SMALL), initial_pose=nominal.camera_from_world, mask=spine, method="opt", device="cpu",
                      progress=lambda fraction, message: fractions.append(fraction))
    final_error = float(mtre_mm(result.camera_from_world, truth, points))
    assert initial_error > 8.0
    assert final_error < 1.0
    assert result.similarity > 0.99 and result.iterations > 0
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_a_flagged_result_looks_again_with_a_plate_masked(sample_case, monkeypatch):
    """The API's second look: with every result flagged (threshold above 1), ``opt`` runs again after the straight
    plate drawn on the X-ray is masked, records that pass and how much the mask took; the pose is still recovered."""
    import sopi.registration.confidence as confidence
    from sopi.registration.passes import INSTRUMENTS_NOTE

    ct, spine, nominal, truth, image = sample_case
    rows, cols = torch.meshgrid(torch.arange(SMALL.rows, dtype=torch.float64), torch.arange(SMALL.cols, dtype=torch.float64), indexing="ij")
    along, across = (cols - 48) * 0.8 + (rows - 48) * 0.6, -(cols - 48) * 0.6 + (rows - 48) * 0.8
    plate = (along.abs() <= 40) & (across.abs() <= 5)
    with_plate = image + 0.5 * float(image.max() - image.min()) * plate.to(image.dtype)
    monkeypatch.setattr(confidence, "LIKELY_FAILED_BELOW", 1.01)
    result = register(ct, XRay(with_plate, SMALL), initial_pose=nominal.camera_from_world, mask=spine, method="opt", device="cpu",
                      iteration_scale=0.5)
    labels = [record["stage"] for record in result.stages]
    first = [label for label in labels if not label.startswith(INSTRUMENTS_NOTE)]
    assert first == [stage.label for stage in get_method("opt")]
    assert labels[len(first):] == [INSTRUMENTS_NOTE + label for label in first]  # opt has no search to widen: two passes
    assert result.likely_failed
    judged = [index for index, record in enumerate(result.stages) if "pass_confidence" in record]  # each pass's own judgement
    assert judged == [len(first) - 1, len(labels) - 1] and all(result.stages[index]["pass_likely_failed"] for index in judged)
    points = torch.nonzero(spine.data)[::200].flip(-1).double() @ spine.world_from_index[:3, :3].T + spine.world_from_index[:3, 3]
    assert float(mtre_mm(result.camera_from_world, truth, points)) < 2.0
    # whichever pass won, it was judged with the plate's sides masked (the first pose is judged again), as recorded
    assert 0.0 < result.xray_preparation["straight_instruments_fraction"] < float(plate.double().mean()) + 0.1


def test_the_bone_contrast_is_fitted_once_where_the_last_stage_starts_when_switched_on(sample_case, monkeypatch):
    from sopi.geometry import params_to_dict
    from sopi.registration.problem import PoseProblem

    ct, spine, nominal, _, image = sample_case
    calls = []
    original = PoseProblem.estimate_bone_contrast

    def spy(self, theta, factor, measure, *args, **kwargs):
        calls.append(theta.detach().clone())
        return original(self, theta, factor, measure, *args, **kwargs)

    monkeypatch.setattr(PoseProblem, "estimate_bone_contrast", spy)
    monkeypatch.setattr(PoseProblem, "FIT_BONE_CONTRAST", True)
    run = lambda: register(ct, XRay(image, SMALL), initial_pose=nominal.camera_from_world, mask=spine, method="opt",  # noqa: E731
                           device="cpu", iteration_scale=0.2)
    result = run()
    assert len(calls) == 1 and len(result.stages) == 4  # CMA-ES, Adam, the depth scan, the polish
    assert params_to_dict(calls[0].reshape(6)) == pytest.approx(result.stages[2]["params"])  # where the stage before the last ended
    assert result.xray_preparation["bone_contrast_estimate"] in (0.6, 0.75, 0.9, 1.0, 1.15, 1.3, 1.5, 1.75)
    monkeypatch.setattr(PoseProblem, "FIT_BONE_CONTRAST", False)  # the default
    calls.clear()
    assert "bone_contrast_estimate" not in run().xray_preparation and not calls


def test_register_cli_writes_result_and_fused_picture(sample_case, tmp_path, capsys):
    _, _, nominal, _, image = sample_case
    write_xray(tmp_path / "xray.mha", image, SMALL)
    save_pose(tmp_path / "init.json", nominal.camera_from_world)
    out, fused = tmp_path / "result.json", tmp_path / "fused.png"
    code = main([
        "register", "--ct", str(sample_ct_path()), "--xray", str(tmp_path / "xray.mha"), "--init", str(tmp_path / "init.json"),
        "--mask", str(sample_vertebrae_path()), "--method", "opt-gc", "--out", str(out), "--fused", str(fused), "--device", "cpu", "--quiet",
        "--iteration-scale", "0.1",
    ])
    assert code == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert {"matrix", "params", "method", "time_s", "similarity", "iterations", "converged"} <= set(result)
    assert result["method"] == "opt-gc" and len(result["matrix"]) == 4
    assert 0 < result["iterations"] <= 6  # opt-gc runs 60 CMA-ES generations; a tenth of them
    assert 0.0 <= result["confidence"] <= 1.0 and isinstance(result["likely_failed"], bool)
    assert result["likely_failed"] == (result["confidence"] < 0.5)
    assert {"similarity_gc", "peak_drop"} <= set(result["confidence_details"])
    assert f"confidence {result['confidence']:.2f}" in capsys.readouterr().out
    assert all(": " not in record["stage"] for record in result["stages"])  # one pass (no instruments to look again without)
    # its own judgement, in its last stage's record, is the result's
    assert [record.get("pass_confidence") for record in result["stages"]] == [None] * (len(result["stages"]) - 1) + [round(result["confidence"], 4)]
    assert result["stages"][-1]["pass_likely_failed"] is result["likely_failed"]
    from PIL import Image

    picture = Image.open(fused)
    assert picture.size == (SMALL.cols, SMALL.rows) and picture.mode == "RGB"
    with pytest.raises(SystemExit) as exit_info:
        main(["register", "--ct", "x", "--xray", "y", "--out", "z", "--method", "nonsense"])
    assert exit_info.value.code == 2


def two_basins(theta: torch.Tensor) -> torch.Tensor:
    """A shallow minimum at theta = 0 (value 0.5) and a deep one at theta_0 = 6 (value 0)."""
    first = theta[..., 0]
    shallow = 0.5 + first.square() + theta[..., 1:].square().sum(-1)
    deep = (first - 6.0).square() + theta[..., 1:].square().sum(-1)
    return torch.minimum(shallow, deep)


def test_multi_start_escapes_a_shallow_basin():
    from sopi.registration.optimizers import multi_start

    start, scale = torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)
    run = lambda point: adam(two_basins, point, scale, iterations=300, learning_rate=0.1, patience=30)  # noqa: E731
    single = run(start)
    assert float(single.theta[0]) == pytest.approx(0.0, abs=0.05)  # stuck in the shallow basin
    several = multi_start(run, start, scale, starts=8, spread=4.0, seed=0)
    assert float(several.theta[0]) == pytest.approx(6.0, abs=0.05) and several.loss < 1e-3
    assert several.iterations > single.iterations


def test_cma_es_restarts_never_lose_the_best_point():
    start, scale = torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)
    once = cma_es(two_basins, start, scale, generations=15, population=8, sigma=0.3, seed=1)
    restarted = cma_es(two_basins, start, scale, generations=15, population=8, sigma=0.3, seed=1, restarts=2)
    assert restarted.loss <= once.loss
    assert restarted.evaluations > once.evaluations


def test_iteration_scale_multiplies_every_budget_but_a_scan_range():
    from sopi.registration.methods import METHODS, FineStage, NetworkStage, Stage, scaled_budgets

    stages = METHODS["sopi+opt"]
    doubled = scaled_budgets(stages, 2.0)
    assert any(isinstance(stage, Stage) and stage.optimizer == "depth-scan" for stage in stages)
    for original, scaled in zip(stages, doubled):
        if isinstance(original, Stage) and original.optimizer == "depth-scan":
            assert scaled == original  # its budget is the scan's half-width in steps, not iterations
        elif isinstance(original, Stage):
            assert scaled.budget == 2 * original.budget
            assert len(scaled.after_kept_start) == len(original.after_kept_start)
            for one, instead in zip(original.after_kept_start, scaled.after_kept_start):  # what a kept start runs too
                assert instead == one if one.optimizer == "depth-scan" else instead.budget == 2 * one.budget
        elif isinstance(original, FineStage):
            assert scaled.rotation_iterations == 2 * original.rotation_iterations
            assert scaled.translation_iterations == 2 * original.translation_iterations
        else:
            assert isinstance(original, NetworkStage) and scaled == original
    assert any(isinstance(stage, Stage) and stage.after_kept_start for stage in stages)
    assert all(stage.budget >= 1 for stage in scaled_budgets(METHODS["opt"], 1e-6))
    with pytest.raises(InputError, match="iteration_scale"):
        scaled_budgets(stages, 0.0)


def test_single_level_runs_every_stage_at_the_finest_level():
    from sopi.registration.methods import METHODS, Stage, single_level

    flat = single_level(METHODS["sopi+opt"])
    factors = {stage.factor for stage in flat if isinstance(stage, Stage)}
    assert factors == {min(stage.factor for stage in METHODS["opt"])} == {2}
    kept = [instead for stage in flat if isinstance(stage, Stage) for instead in stage.after_kept_start]
    assert kept and {stage.factor for stage in kept} == {2}  # what a kept start runs instead works there too
    assert [type(stage) for stage in flat] == [type(stage) for stage in METHODS["sopi+opt"]]
    assert single_level(METHODS["rtpi"]) == METHODS["rtpi"]


def test_register_falls_back_to_the_bone_where_no_spine_is_found():
    """A CT in HU with bone but no vertebral column: the automatic mask becomes every bone of
    the body (with a warning and ``mask_source`` "bone"), so a registration still runs, pivoting
    about that bone's centroid; a given mask is recorded as "given", none as "none"."""
    spacing = 2.0
    z, y, x = (torch.arange(n, dtype=torch.float64) * spacing for n in (40, 90, 110))
    zz, yy, xx = torch.meshgrid(z - z.mean(), y - y.mean(), x - x.mean(), indexing="ij")
    data = torch.where((xx / 100.0) ** 2 + (yy / 80.0) ** 2 <= 1.0, 40.0, -1000.0)
    block = ((xx - 20.0).abs() <= 14.0) & ((yy + 10.0).abs() <= 10.0) & (zz.abs() <= 30.0)
    rod = ((xx + 25.0).abs() <= 4.0) & ((yy - 20.0).abs() <= 4.0)  # a second bone along the whole CT
    data = torch.where(block | rod, 700.0, data).to(torch.float32)
    ct = Volume(data, torch.diag(torch.tensor([spacing, spacing, spacing, 1.0], dtype=torch.float64)))
    bone = Volume((block | rod).to(torch.uint8), ct.world_from_index)
    nominal = nominal_view("ap", mask_centroid_world(bone), SMALL.source_to_isocenter_mm)
    truth = nominal.pose(torch.tensor([0.0, 0.0, 2.0, 5.0, -4.0, 0.0], dtype=torch.float64))
    image = render_drr(rendering_volume(ct, "hu"), SMALL, truth)
    with pytest.warns(UserWarning, match="no vertebral column.*every bone"):
        result = register(ct, XRay(image, SMALL), initial_pose=nominal.camera_from_world, auto_mask=True, method="opt",
                          device="cpu", iteration_scale=0.3, prepare=False)
    assert result.mask_source == "bone" and result.to_dict()["mask_source"] == "bone"
    assert torch.allclose(result.pivot_world, mask_centroid_world(bone), atol=3.0)  # the bone's centroid, within a voxel or so
    points = torch.nonzero(bone.data)[::50].flip(-1).double() * spacing
    start = float(mean_projection_distance_mm(nominal.camera_from_world, truth, SMALL, points))
    assert float(mean_projection_distance_mm(result.camera_from_world, truth, SMALL, points)) < 0.2 * start  # depth: one view
    given = register(ct, XRay(image, SMALL), initial_pose=nominal.camera_from_world, mask=bone, method="opt", device="cpu",
                     iteration_scale=0.05)
    assert given.mask_source == "given"
    assert register(ct, XRay(image, SMALL), initial_pose=nominal.camera_from_world, method="opt", device="cpu",
                    iteration_scale=0.05).mask_source == "none"
    # segmented beside the X-ray's preparation (a start given) = the same mask given, prepared after it
    with pytest.warns(UserWarning, match="no vertebral column"):
        beside = register(ct, XRay(image, SMALL), initial_pose=nominal.camera_from_world, auto_mask=True, method="opt",
                          device="cpu", iteration_scale=0.05)
    after = register(ct, XRay(image, SMALL), initial_pose=nominal.camera_from_world, mask=bone_mask(ct), method="opt",
                     device="cpu", iteration_scale=0.05)
    assert beside.mask_source == "bone" and torch.equal(beside.camera_from_world, after.camera_from_world)
    assert beside.xray_preparation == after.xray_preparation


def test_side_by_side_runs_the_second_in_a_thread_and_raises_the_first_error():
    import threading

    from sopi.registration.api import _side_by_side

    assert _side_by_side(lambda: threading.current_thread().name, lambda: threading.current_thread().name)[1].startswith("sopi-mask")
    finished = []

    def slow_failure():
        finished.append("second")
        raise InputError("second")

    with pytest.raises(InputError, match="first"):
        _side_by_side(lambda: (_ for _ in ()).throw(InputError("first")), slow_failure)
    assert finished == ["second"]  # it ran to its end before the first's error was raised
    with pytest.raises(InputError, match="second"):
        _side_by_side(lambda: 1, slow_failure)


def test_a_line_scan_returns_the_vertex_of_a_parabola_and_the_end_of_a_slope():
    direction = torch.tensor([0.0, 0.0, 0.0, 0.1, 0.2, 0.97], dtype=torch.float64)
    start = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)

    def steps_from_start(theta: torch.Tensor) -> torch.Tensor:
        return (theta - start) @ direction / (direction @ direction)

    vertex = line_scan(lambda theta: (steps_from_start(theta) - 2.3).square(), start, direction, half_steps=8)
    assert float(steps_from_start(vertex.theta)) == pytest.approx(2.3, abs=1e-9)  # exact for a parabola
    assert vertex.evaluations == 18 and vertex.loss == pytest.approx(0.0, abs=1e-12)
    slope = line_scan(lambda theta: -steps_from_start(theta), start, direction, half_steps=3)
    assert float(steps_from_start(slope.theta)) == pytest.approx(3.0) and slope.evaluations == 7  # the end, no vertex to refine
    with pytest.raises(FloatingPointError):
        line_scan(lambda theta: torch.full((theta.shape[0],), float("nan"), dtype=torch.float64), start, direction, half_steps=2)


def test_a_large_xray_is_binned_on_the_same_physical_detector():
    """``working_xray`` against a second computation: the DRR rendered on the binned detector equals the binned
    DRR, a world point lands at the same millimetres on both detectors, and a binned field pixel is exposed only
    where all of its fine pixels are. Small X-rays come back as they are."""
    from sopi.geometry import project_points
    from sopi.io_xray import working_xray

    ct, labels = load_sample()
    fine = CArmGeometry(1011.7, 180, 210, (1.1, 1.0), (100.3, 95.8), source_to_isocenter_mm=675.0)
    pose = nominal_view("ap", mask_centroid_world(mask_from_labels(labels)), 675.0).pose(torch.tensor([2.0, -1.0, 3.0, 4.0, -5.0, 6.0]))
    volume = rendering_volume(ct, "hu")
    field = torch.zeros(fine.shape, dtype=torch.bool)
    field[:, :101] = True  # exposed left of column 101
    xray = XRay(render_drr(volume, fine, pose), fine, "big.mha", {}, field)
    binned, factor = working_xray(xray, max_px=70)
    assert factor == 3 and binned.image.shape == (60, 70) and binned.geometry.shape == (60, 70)
    assert binned.metadata["binned_by"] == 3 and torch.equal(xray.image, render_drr(volume, fine, pose))  # the input is left alone
    drr = render_drr(volume, binned.geometry, pose)
    assert float((drr - binned.image).abs().max()) < 0.03 * float(drr.max())
    points = torch.tensor([[10.0, -40.0, 20.0], [-30.0, 25.0, -60.0]], dtype=torch.float64) + mask_centroid_world(mask_from_labels(labels))

    def on_detector_mm(geometry: CArmGeometry) -> torch.Tensor:
        pixels = project_points(pose, geometry, points)
        return (pixels - torch.tensor(geometry.principal_point_px)) * torch.tensor(geometry.pixel_spacing_mm)

    assert torch.allclose(on_detector_mm(binned.geometry), on_detector_mm(fine), atol=1e-6)
    exposed_columns = binned.field_mask.all(dim=0)
    assert int(exposed_columns.sum()) == 33 and bool(exposed_columns[:33].all())  # coarse column 33 covers fine 99-101, two thirds exposed
    same, factor = working_xray(xray, max_px=210)
    assert same is xray and factor == 1


def test_register_bins_a_large_xray_and_still_finds_the_pose(sample_case, monkeypatch):
    import sopi.io_xray

    ct, spine, nominal, truth, image = sample_case
    monkeypatch.setattr(sopi.io_xray, "MAX_WORKING_PX", 48)  # the 96-pixel X-ray is "large": binned by 2
    points = torch.nonzero(spine.data)[::200].flip(-1).double() @ spine.world_from_index[:3, :3].T + spine.world_from_index[:3, 3]
    result = register(ct, XRay(image, SMALL), initial_pose=nominal.camera_from_world, mask=spine, method="opt", device="cpu")
    assert result.xray_preparation["binned_by"] == 2
    assert float(mtre_mm(result.camera_from_world, truth, points)) < 1.0


def test_opts_depth_scan_brings_a_pose_off_in_depth_back_along_the_ray(sample_case):
    """``opt``'s last stage moves depth alone: from the true pose pushed 7 mm along the ray through the
    pivot, it returns to the truth within a millimetre, and only along that ray."""
    from sopi.registration.api import _run_stage
    from sopi.registration.methods import DEPTH_SCAN, METHODS, several_view_stages
    from sopi.registration.problem import PoseProblem

    ct, spine, nominal, _, image = sample_case
    truth = torch.tensor([2.0, -1.5, 2.5, 4.0, -3.0, 8.0], dtype=torch.float64)
    start = nominal.pose(torch.zeros(6, dtype=torch.float64)).to(torch.float64)
    problem = PoseProblem(rendering_volume(ct, "hu"), image, SMALL, start, mask_centroid_world(spine), mask=spine)
    direction = problem.depth_direction(truth)
    assert float(direction[:3].abs().max()) == 0.0 and float(direction[3:].norm()) == pytest.approx(1.0)
    off = truth + 7.0 * direction
    result = _run_stage(problem, DEPTH_SCAN, off, 0, Monitor())
    moved = result.theta - off
    along = float(moved @ direction)
    assert torch.allclose(moved, along * direction, atol=1e-9)  # depth alone
    assert along == pytest.approx(-7.0, abs=1.0)
    assert METHODS["opt"][-2] == DEPTH_SCAN
    assert DEPTH_SCAN not in several_view_stages(METHODS["global+opt"])  # several views see depth themselves
    assert several_view_stages(METHODS["global+opt"]) == METHODS["global+opt"][:-2]  # and the polish after it


def test_the_final_polish_climbs_the_scans_similarity_on_every_parameter(sample_case):
    """``opt``'s last stage (``FINAL_POLISH``): from the true pose turned 1.5 deg about the detector's rows and pushed
    4 mm along the ray, where a depth scan alone can only trade depth against the turn, Adam on the scan's similarity
    over every parameter ends nearer the truth than the scan does, and scores higher there."""
    from sopi.registration.api import _run_stage
    from sopi.registration.methods import DEPTH_SCAN, FINAL_POLISH, METHODS
    from sopi.registration.problem import PoseProblem

    ct, spine, nominal, _, image = sample_case
    truth = torch.tensor([2.0, -1.5, 2.5, 4.0, -3.0, 8.0], dtype=torch.float64)
    start = nominal.pose(torch.zeros(6, dtype=torch.float64)).to(torch.float64)
    problem = PoseProblem(rendering_volume(ct, "hu"), image, SMALL, start, mask_centroid_world(spine), mask=spine)
    points = torch.nonzero(spine.data)[::200].flip(-1).double() @ spine.world_from_index[:3, :3].T + spine.world_from_index[:3, 3]
    off = truth + 4.0 * problem.depth_direction(truth)
    off[0] += 1.5
    scanned = _run_stage(problem, DEPTH_SCAN, off, 0, Monitor()).theta.to(torch.float64)
    polished = _run_stage(problem, FINAL_POLISH, scanned, 0, Monitor()).theta.to(torch.float64)
    error = [float(mtre_mm(problem.pose(theta), problem.pose(truth), points)) for theta in (off, scanned, polished)]
    assert error[2] < 0.5 * error[1] and error[2] < 1.0, error
    with torch.no_grad():
        problem.hold_ct_edges(scanned)
        before, after = problem.similarity(torch.stack([scanned, polished]), FINAL_POLISH.factor, FINAL_POLISH.measure).tolist()
    assert after > before
    assert METHODS["opt"][-1] == FINAL_POLISH and FINAL_POLISH.measure == DEPTH_SCAN.measure


def test_the_full_resolution_polish_senses_depth_the_half_resolution_one_misses(sample_case):
    """``FULL_POLISH`` (measured, not in ``opt``: docs/benchmarks.md): on a 192-pixel detector the polish at 1/2 works
    on 96 pixels; from the true pose pushed 2 mm along the ray and turned 0.6 deg it stops where half a millimetre of
    depth changes the image by a small fraction of its pixel, and the same Adam on the full-resolution detector (in
    its window) ends nearer the truth on this clean X-ray, at a higher full-resolution score."""
    from sopi.registration.api import _run_stage
    from sopi.registration.methods import FINAL_POLISH, FULL_POLISH, METHODS
    from sopi.registration.problem import PoseProblem

    ct, spine, _, _, _ = sample_case
    detector = CArmGeometry(1011.7, 192, 192, (1.2, 1.2), source_to_isocenter_mm=675.0)  # SMALL's field, twice the pixels
    assert (FINAL_POLISH.level_factor(192), FULL_POLISH.level_factor(192)) == (2, 1)
    nominal = nominal_view("ap", mask_centroid_world(spine), detector.source_to_isocenter_mm)
    truth = torch.tensor([2.0, -1.5, 2.5, 4.0, -3.0, 8.0], dtype=torch.float64)
    image = render_drr(rendering_volume(ct, "hu"), detector, nominal.pose(truth))
    start = nominal.pose(torch.zeros(6, dtype=torch.float64)).to(torch.float64)
    problem = PoseProblem(rendering_volume(ct, "hu"), image, detector, start, mask_centroid_world(spine), mask=spine)
    points = torch.nonzero(spine.data)[::200].flip(-1).double() @ spine.world_from_index[:3, :3].T + spine.world_from_index[:3, 3]
    off = truth + 2.0 * problem.depth_direction(truth)
    off[0] -= 0.6
    half = _run_stage(problem, FINAL_POLISH, off, 0, Monitor()).theta.to(torch.float64)
    full = _run_stage(problem, FULL_POLISH, half, 0, Monitor()).theta.to(torch.float64)
    error = [float(mtre_mm(problem.pose(theta), problem.pose(truth), points)) for theta in (off, half, full)]
    assert error[1] > 0.4 and error[2] < 0.5 * error[1], error
    with torch.no_grad():
        problem.hold_ct_edges(half)
        before, after = problem.similarity(torch.stack([half, full]), 1, FULL_POLISH.measure).tolist()
    assert after > before
    assert FULL_POLISH not in METHODS["opt"] and FULL_POLISH.single_view and FINAL_POLISH.single_view and FULL_POLISH.spine_window


def test_a_fine_ct_is_registered_binned_and_the_pose_still_found(sample_case, monkeypatch):
    """A CT finer than WORKING_SPACING_MM renders binned (here the 1.5 mm sample with the limit at 3 mm: 2 x 2 x 2),
    about the full mask's centroid; the pose is found as on the full grid and the result records the binning."""
    import sopi.render
    from sopi.registration.problem import PoseProblem

    ct, spine, nominal, truth, image = sample_case
    shapes = []
    original = PoseProblem.__post_init__

    def spy(self):
        shapes.append((tuple(self.volume.data.shape), tuple(self.mask.data.shape)))
        original(self)

    monkeypatch.setattr(PoseProblem, "__post_init__", spy)
    monkeypatch.setattr(sopi.render, "WORKING_SPACING_MM", 3.0)
    points = torch.nonzero(spine.data)[::200].flip(-1).double() @ spine.world_from_index[:3, :3].T + spine.world_from_index[:3, 3]
    result = register(ct, XRay(image, SMALL), initial_pose=nominal.camera_from_world, mask=spine, method="opt", device="cpu")
    half = tuple(-(-size // 2) for size in ct.data.shape)
    assert shapes and all(shape == (half, half) for shape in shapes)
    assert result.ct_binned_by == (2, 2, 2) and result.to_dict()["ct_binned_by"] == [2, 2, 2]
    assert torch.allclose(result.pivot_world, mask_centroid_world(spine))
    assert float(mtre_mm(result.camera_from_world, truth, points)) < 1.5


def test_cma_es_runs_without_importing_scipy_stats_and_scipy_stats_stays_importable():
    """``cmaes`` imports ``scipy.stats`` (0.4-0.6 s) only for a class not used here: the optimiser leaves it out, gives
    the same points as the package imported with it, and ``scipy.stats`` can still be imported afterwards."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import sopi

    script = (
        "import sys, torch\n"
        "from sopi.registration.optimizers import cma_es\n"
        "def loss(t): return (t - torch.tensor([1.0, -2.0, 0.5, 3.0, -4.0, 6.0], dtype=torch.float64)).square().sum(-1)\n"
        "first = sys.argv[1] == 'stats-first'\n"
        "if first: import scipy.stats\n"
        "r = cma_es(loss, torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64), generations=6, population=8, seed=2)\n"
        "print('scipy.stats' in sys.modules, [round(float(v), 12) for v in r.theta])\n"
        "import scipy.stats\n"
        "print(float(scipy.stats.norm.cdf(0.0)))\n"
    )
    outputs = {}
    for order in ("cmaes-first", "stats-first"):
        done = subprocess.run([sys.executable, "-c", script, order], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(Path(sopi.__file__).resolve().parents[1])})
        outputs[order] = done.stdout.splitlines()
    assert outputs["cmaes-first"][0].startswith("False ") and outputs["stats-first"][0].startswith("True ")
    assert outputs["cmaes-first"][0][len("False "):] == outputs["stats-first"][0][len("True "):]  # the same points
    assert outputs["cmaes-first"][1] == outputs["stats-first"][1] == "0.5"
