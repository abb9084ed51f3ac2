"""Joint registration of several views on a tiny synthetic volume (a single view cannot see depth there)."""

from __future__ import annotations

import pytest
import torch

from sopi.distances import mtre_mm
from sopi.errors import InputError
from sopi.geometry import CArmGeometry, invert_rigid, nominal_view, transform_points
from sopi.io_xray import XRay
from sopi.registration.global_search import GlobalStage
from sopi.registration.multiview import LinkedProblem, MultiViewProblem, register_views
from sopi.registration.multiview_global import align_in_view
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
    single = register_views(ct, xrays[:1], initial_pose=start, method="opt", device="cpu", prepare=False, iteration_scale=0.5)
    joint = register_views(ct, xrays, initial_pose=start, method="opt", device="cpu", prepare=False, iteration_scale=0.5)
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
    # a right joint result is trusted; the joint confidence is the lowest view's
    assert 0.5 < joint.confidence <= 1.0 and not joint.likely_failed
    assert len(joint.view_confidences) == 2 and joint.confidence == min(joint.view_confidences)
    assert result["confidence"] == round(joint.confidence, 4) and result["likely_failed"] is False
    assert [view["confidence"] for view in result["views"]] == [round(value, 4) for value in joint.view_confidences]
    assert result["confidence_details"]["combined_as"] == "minimum over views"


def _problem(ct, start, xrays) -> MultiViewProblem:
    """The joint objective of the views as register_views builds it (no preparation, no mask)."""
    attenuation = rendering_volume(ct, "hu")
    return MultiViewProblem([
        LinkedProblem(attenuation, xray.image, xray.geometry, start, ct.center_world, view_from_reference=xray.geometry.reference_transform())
        for xray in xrays
    ])


def test_views_rendered_in_one_batch_score_as_each_view_alone(two_views):
    ct, start, _, xrays = two_views
    problem = _problem(ct, start, xrays)
    thetas = torch.tensor([[0.0] * 6, TRUTH.tolist(), [5.0, 1.0, -2.0, 3.0, 0.0, -9.0]], dtype=torch.float64)
    joint = problem.similarity(thetas, 1, "gc")
    alone = torch.stack([view.similarity(thetas, 1, "gc") for view in problem.views]).mean(dim=0)
    assert torch.allclose(joint, alone, atol=1e-5)
    assert int(joint.argmax()) == 1  # the truth scores best


def test_a_depth_only_view_0_got_wrong_is_found_in_the_lateral_view(two_views):
    """View 0's depth is an in-plane shift of the lateral view: one render and an FFT match place it."""
    ct, start, _, xrays = two_views
    problem = _problem(ct, start, xrays)
    hypothesis = TRUTH.clone()
    hypothesis[5] += 45.0  # 45 mm too deep along view 0's ray: invisible to view 0 at 7 m
    moved = align_in_view(problem, 1, hypothesis, GlobalStage(), peaks=1)[0]
    assert torch.allclose(moved[:3], hypothesis[:3], atol=1e-6)  # the rotation is kept
    assert abs(float(moved[5] - TRUTH[5])) < 4.0  # about a pixel (3.2 mm at the isocentre) from the truth, 45 mm before
    assert abs(float(moved[4] - TRUTH[4])) < 4.0  # the lateral view's other axis (head-foot) stays right


def test_joint_confidence_sees_a_depth_error_that_view_0_alone_cannot(two_views):
    """At 7 m, 45 mm along view 0's ray barely changes view 0's image but shifts the lateral one
    by 14 pixels: view 0's assessment still trusts that pose, the joint one must not."""
    from sopi.registration.confidence import assess, assess_views

    ct, start, _, xrays = two_views
    problem = _problem(ct, start, xrays)
    deep = TRUTH.clone()
    deep[5] += 45.0
    wrong = TRUTH + torch.tensor([12.0, -10.0, 15.0, 25.0, 20.0, -40.0], dtype=torch.float64)
    right, too_deep, lost = (assess_views(problem.views, theta) for theta in (TRUTH, deep, wrong))
    assert not right.likely_failed and 0.5 < right.confidence <= 1.0
    assert assess(problem.views[0], deep).confidence > 0.5  # view 0 alone: looks right
    assert too_deep.likely_failed and 0.0 <= too_deep.confidence < 0.5 and too_deep.weakest_view == 1
    assert lost.likely_failed and lost.confidence < right.confidence
    assert [view.confidence for view in right.views] == [assess(view, TRUTH).confidence for view in problem.views]
    assert right.details()["views"][1]["confidence"] == pytest.approx(right.views[1].confidence, abs=1e-4)


def test_the_default_global_search_places_a_far_start_with_two_views(two_views):
    """global+opt (the default) from 25 deg and 20 mm off in depth (which one view cannot see at 7 m, see above)."""
    ct, _, _, xrays = two_views
    sid = FAR.source_to_isocenter_mm
    ap = nominal_view("ap", ct.center_world, sid)
    truth = ap.pose(torch.tensor([25.0, -20.0, 15.0, 10.0, -8.0, 20.0], dtype=torch.float64))
    attenuation = rendering_volume(ct, "hu")
    far = [XRay(render_drr(attenuation, xray.geometry, xray.geometry.reference_transform() @ truth), xray.geometry) for xray in xrays]
    mask = ct.with_data((ct.data > 0).to(torch.uint8))
    centre = ct.center_world
    joint = register_views(ct, far, initial_pose=ap.camera_from_world, mask=mask, device="cpu", prepare=False, iteration_scale=0.5)
    assert joint.method == "global+opt" and joint.stages[0]["stage"] == "global search"
    assert abs(_depth_error_mm(joint.camera_from_world, truth, centre)) < 1.0
    points = centre + torch.tensor([[20.0, 0, 0], [0, 20, 0], [0, 0, 20], [-20, -20, -20]], dtype=torch.float64)
    assert float(mtre_mm(joint.camera_from_world, truth, points)) < 1.0


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


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def simulated_views(tmp_path_factory):
    """``sopi simulate --views ap,lateral`` of the blobs CT on the far C-arm."""
    from sopi.cli import main
    from sopi.io import write_volume

    folder = tmp_path_factory.mktemp("views")
    write_volume(folder / "ct.nii.gz", blobs_ct())
    FAR.save(folder / "far.json")
    code = main(["simulate", str(folder / "ct.nii.gz"), "--views", "ap,lateral", "--geometry", str(folder / "far.json"),
                 "--out", str(folder / "case"), "--seed", "3", "--device", "cpu"])
    assert code == 0
    return folder


def test_simulate_writes_one_xray_and_geometry_per_view(simulated_views):
    from sopi.geometry import load_pose
    from sopi.io import read_xray

    case = simulated_views / "case"
    ap, lateral = (CArmGeometry.load(case / f"geometry_{view}.json") for view in ("ap", "lateral"))
    assert ap.view_from_reference is None and lateral.view_from_reference is not None
    init = load_pose(case / "init.json")
    centre = blobs_ct().center_world
    expected = nominal_view("lateral", centre, FAR.source_to_isocenter_mm).camera_from_world
    assert torch.allclose(lateral.reference_transform() @ init, expected, atol=1e-9)  # nominal AP -> nominal lateral
    embedded = read_xray(case / "xray_lateral.mha")  # the .mha carries its geometry, view_from_reference included
    assert embedded.geometry == lateral and embedded.image.shape == (FAR.rows, FAR.cols)
    assert float(load_pose(case / "gt.json").sub(init).abs().max()) > 0


def test_simulate_realistic_views_writes_the_benchmarks_case_0_and_each_views_draw(simulated_views, tmp_path):
    """``sopi simulate --views ap,lateral --realistic``: the same true pose as the clean case; view 0 is case 0 of
    ``sopi benchmark --realistic``, the lateral view the benchmark's own draw for it, both recorded in realism.json."""
    import json

    from sopi.cli import main
    from sopi.geometry import load_pose
    from sopi.io import read_ct, read_xray
    from sopi.simulate import other_view_images, simulate_cases

    code = main(["simulate", str(simulated_views / "ct.nii.gz"), "--views", "ap,lateral", "--geometry", str(simulated_views / "far.json"),
                 "--out", str(tmp_path / "real"), "--seed", "3", "--device", "cpu", "--realistic"])
    assert code == 0
    truth = load_pose(tmp_path / "real" / "gt.json")
    assert torch.allclose(truth, load_pose(simulated_views / "case" / "gt.json"), atol=1e-12)
    ct = read_ct(simulated_views / "ct.nii.gz")
    ap = nominal_view("ap", ct.center_world, FAR.source_to_isocenter_mm)
    _, images, draws = simulate_cases(ct, ap, FAR, "paper", 1, 3, realistic=True)
    lateral = read_xray(tmp_path / "real" / "xray_lateral.mha")
    ((expected,),), ((lateral_draw,),) = other_view_images(ct, [lateral.geometry], truth[None], 3, realistic=True)
    assert torch.allclose(read_xray(tmp_path / "real" / "xray_ap.mha").image, images[0], atol=1e-6)
    assert torch.allclose(lateral.image, expected, atol=1e-6)
    assert not torch.allclose(lateral.image, read_xray(simulated_views / "case" / "xray_lateral.mha").image, atol=1e-3)
    record = json.loads((tmp_path / "real" / "realism.json").read_text())
    assert record["draws"] == json.loads(json.dumps({"ap": draws[0], "lateral": lateral_draw}))
    # case 1 of sopi benchmark --views --cases 3: the benchmark's second pose, every view's second draw
    assert main(["simulate", str(simulated_views / "ct.nii.gz"), "--views", "ap,lateral", "--geometry", str(simulated_views / "far.json"),
                 "--out", str(tmp_path / "second"), "--seed", "3", "--device", "cpu", "--realistic", "--case", "1", "--cases", "3"]) == 0
    thetas, three, _ = simulate_cases(ct, ap, FAR, "paper", 3, 3, realistic=True)
    truths = torch.stack([ap.pose(theta) for theta in thetas])
    others, _ = other_view_images(ct, [lateral.geometry], truths, 3, realistic=True)
    assert torch.allclose(load_pose(tmp_path / "second" / "gt.json"), truths[1], atol=1e-12)
    assert torch.allclose(read_xray(tmp_path / "second" / "xray_ap.mha").image, three[1], atol=1e-6)
    assert torch.allclose(read_xray(tmp_path / "second" / "xray_lateral.mha").image, others[1][0], atol=1e-6)
    assert not torch.allclose(others[1][0], others[0][0], atol=1e-3)


def test_register_cli_takes_repeated_xray_and_geometry_pairs(simulated_views, tmp_path, capsys):
    import json

    from PIL import Image

    from sopi.cli import main
    from sopi.geometry import load_pose

    case = simulated_views / "case"
    pairs = [arg for view in ("ap", "lateral") for arg in ("--xray", str(case / f"xray_{view}.mha"), "--geometry", str(case / f"geometry_{view}.json"))]
    out, fused = tmp_path / "result.json", tmp_path / "fused.png"
    code = main(["register", "--ct", str(simulated_views / "ct.nii.gz"), *pairs, "--init", str(case / "init.json"), "--out", str(out),
                 "--fused", str(fused), "--no-prepare", "--no-mask", "--iteration-scale", "0.5", "--device", "cpu", "--quiet"])
    assert code == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    truth, start = load_pose(case / "gt.json"), load_pose(case / "init.json")
    centre = blobs_ct().center_world
    points = centre + torch.tensor([[20.0, 0, 0], [0, 20, 0], [0, 0, 20], [-20, -20, -20]], dtype=torch.float64)
    before = float(mtre_mm(start, truth, points))
    after = float(mtre_mm(torch.tensor(result["matrix"], dtype=torch.float64), truth, points))
    assert after < min(1.0, before / 4), (before, after)
    assert len(result["views"]) == 2 and result["views"][1]["xray"].endswith("xray_lateral.mha")
    assert result["method"] == "global+opt"  # the default, as for one view
    assert 0.5 < result["confidence"] <= 1.0 and result["likely_failed"] is False
    assert f"confidence {result['confidence']:.2f}, the lowest of the views'" in capsys.readouterr().out
    assert Image.open(fused).size == (2 * FAR.cols + 4, FAR.rows)  # both views side by side


def test_register_cli_names_what_is_missing_in_one_line(simulated_views, tmp_path, capsys):
    from sopi.cli import main
    from sopi.io import write_xray

    case = simulated_views / "case"
    write_xray(tmp_path / "bare.nii.gz", torch.ones(FAR.rows, FAR.cols), FAR)  # NIfTI carries no geometry
    ct = ["register", "--ct", str(simulated_views / "ct.nii.gz"), "--out", str(tmp_path / "r.json"), "--quiet"]
    two = ["--xray", str(case / "xray_ap.mha"), "--xray", str(case / "xray_lateral.mha")]
    cases = {
        "2 --xray but 1 --geometry": [*two, "--geometry", str(case / "geometry_ap.json")],
        "bare.nii.gz: this file carries no C-arm geometry": ["--xray", str(case / "xray_ap.mha"), "--xray", str(tmp_path / "bare.nii.gz")],
        "1 --xray but 2 --geometry": ["--xray", str(case / "xray_ap.mha"), "--geometry", str(case / "geometry_ap.json"),
                                      "--geometry", str(case / "geometry_lateral.json")],
        "registers one view": [*two, "--method", "sopi+opt"],
        "no spine mask to write with --no-mask": [*two, "--geometry", str(case / "geometry_ap.json"), "--geometry", str(case / "geometry_lateral.json"),
                                                   "--no-mask", "--mask-out", str(tmp_path / "spine.nii.gz")],
    }
    for message, args in cases.items():
        assert main([*ct, *args]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1 and "Traceback" not in error, error
    assert main(["simulate", str(simulated_views / "ct.nii.gz"), "--views", "ap,ap", "--out", str(tmp_path / "x")]) == 2
    assert "two or more different views" in capsys.readouterr().err


def test_benchmark_views_compares_one_view_with_all_on_the_same_cases(simulated_views, tmp_path):
    import csv

    from sopi.cli import main
    from sopi.io import write_volume

    ct = blobs_ct()
    write_volume(tmp_path / "mask.nii.gz", ct.with_data((ct.data > 0).to(torch.uint8)))
    code = main(["benchmark", "--ct", str(simulated_views / "ct.nii.gz"), "--mask", str(tmp_path / "mask.nii.gz"), "--views", "ap,lateral",
                 "--cases", "1", "--seed", "4", "--geometry", str(simulated_views / "far.json"), "--no-prepare",
                 "--out", str(tmp_path / "bench"), "--device", "cpu", "--quiet"])
    assert code == 0
    with open(tmp_path / "bench" / "results.csv", encoding="utf-8", newline="") as handle:
        rows = {row["views"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"-", "ap", "ap+lateral"}
    assert float(rows["ap+lateral"]["mtre_mm"]) < min(1.0, float(rows["-"]["mtre_mm"]))
    assert abs(float(rows["ap+lateral"]["depth_error_mm"])) < 1.0
    for label in ("ap", "ap+lateral"):  # every result row carries its confidence; the joint one trusts its right pose
        assert 0.0 <= float(rows[label]["confidence"]) <= 1.0 and rows[label]["likely_failed"] in ("True", "False")
    assert rows["ap+lateral"]["likely_failed"] == "False" and float(rows["ap+lateral"]["confidence"]) > 0.5
    assert rows["-"]["confidence"] == "nan"
    report = (tmp_path / "bench" / "report.md").read_text(encoding="utf-8")
    assert "| opt | ap+lateral | 1 |" in report and "Confidence against success" in report


def test_other_views_see_the_same_patient_clean_or_with_their_own_realistic_draws(two_views):
    """``other_view_images``: clean, view 1's image is the DRR of view 0's truth through its ``view_from_reference``;
    realistic, it is reproducible with the seed, differs from view 0's draws for another seed, is not the clean DRR
    and still shows it (the same anatomy, correlated)."""
    from sopi.simulate import other_view_images

    ct, _, truth, xrays = two_views
    side = xrays[1].geometry
    ((clean,),), _ = other_view_images(ct, [side], truth[None], seed=2)
    assert torch.allclose(clean, xrays[1].image, atol=1e-5)
    ((real,),), ((draw,),) = other_view_images(ct, [side], truth[None], seed=2, realistic=True)
    ((again,),), _ = other_view_images(ct, [side], truth[None], seed=2, realistic=True)
    ((other,),), ((other_draw,),) = other_view_images(ct, [side], truth[None], seed=3, realistic=True)
    assert draw and draw != other_draw  # each seed its own physics, recorded
    assert torch.equal(real, again) and not torch.equal(real, other)
    assert not torch.allclose(real, clean, atol=1e-3)
    moved = truth @ torch.linalg.inv(torch.tensor([[1.0, 0, 0, 15.0], [0, 1, 0, -10.0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64))
    ((elsewhere,),), _ = other_view_images(ct, [side], moved[None], seed=2)

    def correlation(image: torch.Tensor, drr: torch.Tensor) -> float:  # the centre: inside any collimation drawn
        return float(torch.corrcoef(torch.stack([image[10:22, 10:22].flatten(), drr[10:22, 10:22].flatten()]).double())[0, 1])

    assert correlation(real, clean) > 0.5 and correlation(real, clean) > correlation(real, elsewhere) + 0.2  # the anatomy where the truth puts it


def test_benchmark_views_rates_confidence_by_hand():
    from sopi.benchmark_views import confidence_stats

    def row(mtre, confidence, flagged):
        return {"mtre_mm": mtre, "confidence": confidence, "likely_failed": flagged}

    # successes 0.9 and 0.4 (flagged), failures 0.6 and 0.1: 3 of 4 pairs ordered right
    group = [row(float("nan"), float("nan"), ""), row(0.3, 0.9, False), row(0.8, 0.4, True), row(5.0, 0.6, False), row(40.0, 0.1, True)]
    stats = confidence_stats(group)
    assert stats["confidence_auroc"] == pytest.approx(0.75)
    assert stats["failed_cases"] == 2 and stats["failed_not_flagged"] == pytest.approx(0.5) and stats["success_flagged"] == pytest.approx(0.5)
    assert stats["confidence_median"] == pytest.approx(0.5)
    assert confidence_stats(group[:1]) == {}


def test_views_share_one_polarity_judgement_decided_by_the_best_matching_view(monkeypatch):
    """One C-arm takes every view: the view whose best reading matches best decides, so a view whose
    start is far off (the LIDC lateral view of a 70 deg roll: bone-dark 0.70 against bone-bright 0.39)
    is not re-read when the other view reads bone-bright at 0.93 (against 0.85)."""
    import sopi.registration.preparation as preparation
    from sopi.io import mask_from_labels
    from sopi.sample_data import load_sample
    from sopi.segment import mask_centroid_world

    ct, labels = load_sample()
    small = CArmGeometry(1011.7, 64, 64, (3.6, 3.6), source_to_isocenter_mm=675.0)
    ap, lateral = (nominal_view(name, mask_centroid_world(mask_from_labels(labels)), 675.0) for name in ("ap", "lateral"))
    lateral_geometry = small.with_view_from_reference(lateral.camera_from_world @ invert_rigid(ap.camera_from_world))
    attenuation = rendering_volume(ct, "hu")
    truth = ap.pose(torch.tensor([4.0, -3.0, 5.0, 8.0, -6.0, 15.0], dtype=torch.float64))
    xrays = [XRay(render_drr(attenuation, small, truth), small),
             XRay(render_drr(attenuation, lateral_geometry, lateral_geometry.reference_transform() @ truth), lateral_geometry)]
    poses = [ap.camera_from_world, lateral_geometry.reference_transform() @ ap.camera_from_world]
    inverted = [XRay(float(xray.image.max()) - xray.image, xray.geometry) for xray in xrays]
    cpu = torch.device("cpu")
    clean, flipped = (preparation.prepare_views(views, attenuation, poses, cpu) for views in (xrays, inverted))  # really judged
    for (image, _, record), (again, _, flipped_record) in zip(clean, flipped):
        assert (record["polarity"], flipped_record["polarity"]) == ("bone-bright", "bone-dark")
        assert flipped_record["polarity_source"] == "drr-comparison over 2 views"
        assert torch.allclose(again.image, image.image, atol=1e-3 * float(image.image.abs().max()))  # bone bright again
    lidc = iter([{"bone-bright": 0.932, "bone-dark": 0.85, "intensity": 0.862}, {"bone-bright": 0.393, "bone-dark": 0.7}])
    monkeypatch.setattr(preparation, "_polarity_scores", lambda *args: (lambda scores: preparation._Judgement(scores, scores, None))(next(lidc)))  # both weightings agree
    prepared = preparation.prepare_views(xrays, attenuation, poses, cpu)
    assert [record["polarity"] for _, _, record in prepared] == ["bone-bright", "bone-bright"]
    assert prepared[1][2]["polarity_scores"]["bone-dark"] == 0.7  # each view keeps its own scores in the record
    alone = iter([{"bone-bright": 0.393, "bone-dark": 0.7}])  # judged alone, that view would be re-read
    monkeypatch.setattr(preparation, "_polarity_scores", lambda *args: (lambda scores: preparation._Judgement(scores, scores, None))(next(alone)))
    assert preparation.prepare_fixed(xrays[1], attenuation, poses[1], cpu)[2]["polarity"] == "bone-dark"
    # a re-reading only where the judgement without the found field and the one with it agree
    shadowed = iter([preparation._Judgement({"bone-bright": 0.603, "bone-dark": 0.857}, {"bone-bright": 0.81, "bone-dark": 0.62}, None)])
    monkeypatch.setattr(preparation, "_polarity_scores", lambda *args: next(shadowed))
    record = preparation.prepare_fixed(xrays[1], attenuation, poses[1], cpu)[2]
    assert record["polarity"] == "bone-bright" and record["polarity_scores_field_masked"]["bone-bright"] == 0.81


def test_a_mirrored_lateral_view_is_turned_back_by_its_own_tag(two_views):
    """The lateral X-ray stored mirrored left-right and tagged so (P\\F, anterior to the left); view 0 untagged.
    With ``flip="auto"`` only the lateral is turned, and the joint pose is right and trusted; as stored, the
    mirrored lateral fits no pose (view 0 still holds the pose near the truth) and the result is flagged."""
    from dataclasses import replace

    from sopi.xray_orientation import Orientation

    ct, start, truth, xrays = two_views
    lateral = xrays[1]
    stored = XRay(lateral.image.flip(-1).contiguous(), Orientation(flip_columns=True).geometry(lateral.geometry), None, {"patient_orientation": "P\\F"})
    assert stored.geometry == replace(lateral.geometry, principal_point_px=stored.geometry.principal_point_px)
    points = ct.center_world + torch.tensor([[20.0, 0, 0], [0, 20, 0], [0, 0, 20], [-20, -20, -20]], dtype=torch.float64)
    joint = register_views(ct, [xrays[0], stored], initial_pose=start, method="opt", device="cpu", prepare=False, iteration_scale=0.5)
    assert [record["orientation"]["flip_columns"] for record in joint.xray_preparation] == [False, True]
    turned_error = float(mtre_mm(joint.camera_from_world, truth, points))
    assert turned_error < 1.0 and not joint.likely_failed
    kept = register_views(ct, [xrays[0], stored], initial_pose=start, method="opt", device="cpu", prepare=False, iteration_scale=0.5, flip="none")
    assert kept.likely_failed and kept.view_confidences[1] < 0.5
    assert float(mtre_mm(kept.camera_from_world, truth, points)) > turned_error


def _column_mask(ct: Volume) -> Volume:
    """A 'spine' along the CT's third axis: the two central columns of voxels, every slice."""
    data = torch.zeros_like(ct.data, dtype=torch.uint8)
    middle = ct.data.shape[1] // 2
    data[:, middle - 1:middle + 1, middle - 1:middle + 1] = 1
    return ct.with_data(data)


def test_simulate_views_draws_a_far_case_along_the_spine_for_every_view(simulated_views, tmp_path, capsys):
    """``--protocol far`` with several views: the case's pose is the benchmark's far draw about a spine voxel (the mask
    is needed), and the lateral view sees that pose through its own geometry, as the benchmark renders it."""
    from sopi.cli import main
    from sopi.geometry import load_pose
    from sopi.io import read_ct, read_xray, write_volume
    from sopi.segment import mask_centroid_world
    from sopi.simulate import case_poses, other_view_images

    ct = read_ct(simulated_views / "ct.nii.gz")
    spine = _column_mask(ct)
    write_volume(tmp_path / "mask.nii.gz", spine)
    common = ["simulate", str(simulated_views / "ct.nii.gz"), "--views", "ap,lateral", "--geometry", str(simulated_views / "far.json"),
              "--protocol", "far", "--seed", "5", "--case", "1", "--cases", "3", "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "no_mask")]) == 2
    assert "--mask" in capsys.readouterr().err and not (tmp_path / "no_mask").exists()
    assert main([*common, "--mask", str(tmp_path / "mask.nii.gz"), "--out", str(tmp_path / "far")]) == 0
    ap = nominal_view("ap", mask_centroid_world(spine), FAR.source_to_isocenter_mm)
    thetas = case_poses(ap, "far", 3, 5, spine)
    truths = torch.stack([ap.pose(theta) for theta in thetas])
    assert torch.allclose(load_pose(tmp_path / "far" / "gt.json"), truths[1], atol=1e-9)
    assert not torch.allclose(truths[1], ap.pose(case_poses(ap, "wide", 3, 5)[1]), atol=1e-3)  # not a draw about the centroid
    lateral = read_xray(tmp_path / "far" / "xray_lateral.mha")
    others, _ = other_view_images(ct, [lateral.geometry], truths, 5)
    assert torch.allclose(lateral.image, others[1][0], atol=1e-6)


def test_benchmark_views_draws_far_cases_along_the_given_spine(simulated_views, tmp_path, monkeypatch):
    """``sopi benchmark --views --protocol far`` draws its cases with the mask it was given (registration replaced by
    one that returns the start: every row's error is then the start's, measured against the far truth)."""
    import csv
    from types import SimpleNamespace

    import sopi.registration as registration
    from sopi.benchmark import case_metrics, target_points
    from sopi.cli import main
    from sopi.io import read_ct, write_volume
    from sopi.segment import mask_centroid_world
    from sopi.simulate import case_poses

    def at_start(ct, xray, initial_pose, **kwargs):
        return SimpleNamespace(camera_from_world=initial_pose, time_s=0.0, confidence=0.5, likely_failed=False)

    monkeypatch.setattr(registration, "register", at_start)
    monkeypatch.setattr(registration, "register_views", at_start)
    ct = read_ct(simulated_views / "ct.nii.gz")
    spine = _column_mask(ct)
    write_volume(tmp_path / "mask.nii.gz", spine)
    code = main(["benchmark", "--ct", str(simulated_views / "ct.nii.gz"), "--mask", str(tmp_path / "mask.nii.gz"), "--views", "ap,lateral",
                 "--protocol", "far", "--cases", "2", "--seed", "4", "--geometry", str(simulated_views / "far.json"), "--no-prepare",
                 "--out", str(tmp_path / "bench"), "--device", "cpu", "--quiet"])
    assert code == 0
    with open(tmp_path / "bench" / "results.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    ap = nominal_view("ap", mask_centroid_world(spine), FAR.source_to_isocenter_mm)
    for index, theta in enumerate(case_poses(ap, "far", 2, 4, spine)):
        expected = case_metrics(ap.camera_from_world, ap.pose(theta), ap, FAR, target_points(spine)).mtre_mm
        measured = [float(row["mtre_mm"]) for row in rows if row["case"] == str(index)]
        assert len(measured) == 3 and all(abs(value - expected) < 1e-6 for value in measured)
