"""Benchmark metrics against hand-computed values; a tiny end-to-end run; realism effects."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from sopi.augment import bone_contrast_attenuation, detector_effects, detector_effects_batch, draw_realism
from sopi.benchmark import case_metrics, run_benchmark
from sopi.geometry import CArmGeometry, nominal_view
from sopi.report import summarise
from sopi.sample_data import sample_ct_path, sample_vertebrae_path

GEOMETRY = CArmGeometry(1000.0, 100, 100, (1.0, 1.0), source_to_isocenter_mm=600.0)


def test_case_metrics_by_hand():
    nominal = nominal_view("ap", torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64), 600.0)
    truth_theta = torch.tensor([1.0, -2.0, 0.5, 3.0, 1.0, -2.0], dtype=torch.float64)
    # a pure in-plane shift of the CT by (2, 1, 0) mm in the isocentric frame after the true rotation
    truth = nominal.pose(truth_theta)
    shift = torch.eye(4, dtype=torch.float64)
    shift[:3, 3] = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)
    estimate = shift @ truth  # moves every point by (2, 1, 0) mm in camera axes
    points = torch.tensor([[10.0, 20.0, 30.0], [40.0, 20.0, 30.0]], dtype=torch.float64)
    metrics = case_metrics(estimate, truth, nominal, GEOMETRY, points)
    assert metrics.mtre_mm == pytest.approx(5**0.5)
    assert metrics.translation_at_isocenter_mm == pytest.approx(5**0.5)
    assert metrics.rotation_deg == pytest.approx(0.0, abs=1e-6)
    assert metrics.paper_rotation_deg == pytest.approx(0.0, abs=1e-6)
    assert metrics.paper_translation_mm == pytest.approx(3.0)  # |2| + |1| + |0|
    # the paper fails a case at or above 3 (exactly 3 is left out: its round-off differs by CPU)
    for moved, fails in (((2.0, 1.5, 0.0), True), ((1.5, 1.0, 0.0), False)):
        shift[:3, 3] = torch.tensor(moved, dtype=torch.float64)
        judged = case_metrics(shift @ truth, truth, nominal, GEOMETRY, points)
        assert judged.paper_translation_mm == pytest.approx(sum(moved)) and judged.failed == fails
    # at the isocentre the detector magnification is sdd / source-to-isocentre
    centre_only = case_metrics(estimate, truth, nominal, GEOMETRY, points[:1])
    depth = float((truth[:3, :3] @ points[0] + truth[:3, 3])[2])
    assert centre_only.projection_distance_mm == pytest.approx(5**0.5 * 1000.0 / depth, rel=1e-9)


def test_summarise_by_hand():
    rows = [
        {"method": "m", "paper_rotation_deg": r, "paper_translation_mm": t, "rotation_deg": r, "translation_at_isocenter_mm": t,
         "mtre_mm": e, "projection_distance_mm": e, "time_s": 1.0, "failed": r >= 3 or t >= 3}
        for r, t, e in [(1.0, 1.0, 0.5), (4.0, 1.0, 3.0), (1.0, 5.0, 12.0), (2.0, 2.0, 1.0)]
    ]
    summary = summarise(rows)["m"]
    assert summary["failure_rate"] == pytest.approx(0.5)
    assert summary["success_2mm"] == pytest.approx(0.5)
    assert summary["success_10mm"] == pytest.approx(0.75)
    assert summary["paper_rotation_deg_mean"] == pytest.approx(2.0)
    assert summary["mtre_mm_median"] == pytest.approx(2.0)
    assert "tz_mm_bias" not in summary  # rows without per-axis estimates


def test_summarise_per_axis_errors_by_hand():
    from sopi.geometry import PARAM_NAMES
    from sopi.report import table_markdown

    truths = [[0.0, 1.0, 0.0, 2.0, 0.0, 10.0], [0.0, -1.0, 0.0, -2.0, 0.0, 0.0]]
    estimates = [[0.5, 1.0, 0.0, 2.0, 0.0, 4.0], [-1.5, -1.0, 0.0, -2.0, 0.0, 2.0]]
    rows = [
        {"method": "m", "paper_rotation_deg": 0.0, "paper_translation_mm": 0.0, "rotation_deg": 0.0, "translation_at_isocenter_mm": 0.0,
         "mtre_mm": 0.0, "projection_distance_mm": 0.0, "time_s": 1.0, "failed": False,
         **{f"true_{n}": t for n, t in zip(PARAM_NAMES, truth)}, **{f"est_{n}": e for n, e in zip(PARAM_NAMES, estimate)}}
        for truth, estimate in zip(truths, estimates)
    ]
    summary = summarise(rows)["m"]
    assert summary["rx_deg_abs_error_mean"] == pytest.approx(1.0) and summary["rx_deg_bias"] == pytest.approx(-0.5)
    assert summary["tz_mm_abs_error_mean"] == pytest.approx(4.0) and summary["tz_mm_bias"] == pytest.approx(-2.0)
    assert summary["ty_mm_abs_error_mean"] == 0.0
    assert "| m | 1.00 (-0.50) | 0.00 (+0.00) | 0.00 (+0.00) | 0.00 (+0.00) | 0.00 (+0.00) | 4.00 (-2.00) |" in table_markdown({"m": summary})


def test_realism_changes_images_reproducibly():
    generator = torch.Generator().manual_seed(0)
    draw = draw_realism(generator)
    image = torch.linspace(0.0, 4.0, 64 * 64).reshape(64, 64)
    first = detector_effects(image, draw, torch.Generator().manual_seed(1))
    second = detector_effects(image, draw, torch.Generator().manual_seed(1))
    assert torch.equal(first, second) and not torch.allclose(first, image, atol=1e-2)
    hu = torch.tensor([-1000.0, 0.0, 1000.0])
    boosted = bone_contrast_attenuation(hu, 0.5)
    assert boosted[0] == 0 and boosted[2] / boosted[1] > 2.0 * 1.4  # bone gained contrast over water


def test_training_noise_is_set_by_the_dose_behind_the_patient():
    # a thick centre (line integral 4) in a thin surround (0.5): var(-log N / N0) = 1 / E[N] for Poisson N
    image = torch.full((128, 128), 0.5, dtype=torch.float64)
    image[32:96, 32:96] = 4.0
    photons, no_blur, linear = torch.tensor([1000.0]), torch.tensor([1e-3]), torch.tensor([1.0])
    centre = (slice(36, 92), slice(36, 92))
    controlled = detector_effects_batch(image[None], photons, no_blur, linear, torch.Generator().manual_seed(0))[0]
    assert float((controlled - image)[centre].std()) == pytest.approx(math.sqrt(1.0 / 1000.0), rel=0.1)
    beam = detector_effects_batch(image[None], photons, no_blur, linear, torch.Generator().manual_seed(0), exposure_control=False)[0]
    assert float((beam - image)[centre].std()) == pytest.approx(math.sqrt(math.exp(4.0) / 1000.0), rel=0.1)


def test_a_tiny_benchmark_end_to_end(tmp_path):
    written = run_benchmark(
        sample_ct_path(), sample_vertebrae_path(), tmp_path, methods=["opt-gc"], protocol="paper", cases=2, seed=4,
        geometry=CArmGeometry(1011.7, 64, 64, (3.2, 3.2), source_to_isocenter_mm=675.0),
    )
    names = {path.name for path in written}
    assert {"results.csv", "report.md", "summary.json", "errors.png", "capture_range.png"} <= names
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [row["method"] for row in rows] == ["Initial", "Initial", "opt-gc", "opt-gc"]
    initial = rows[0]
    # the Initial row's paper errors are the sums of the true offsets
    offsets = [abs(float(initial[f"true_{name}"])) for name in ("rx_deg", "ry_deg", "rz_deg")]
    assert float(initial["paper_rotation_deg"]) == pytest.approx(sum(offsets), rel=1e-6)
    assert initial["confidence"] == "" and all(0.0 <= float(row["confidence"]) <= 1.0 for row in rows[2:])
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| Initial |" in report and "| opt-gc |" in report
    assert "| Method | AUROC |" in report
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["settings"]["cases"] == 2


def test_far_protocol_centres_each_case_on_a_spine_voxel():
    from sopi.simulate import _along_spine
    from sopi.geometry import invert_rigid
    from sopi.io import mask_from_labels
    from sopi.sample_data import load_sample
    from sopi.segment import mask_centroid_world

    _, labels = load_sample()
    spine = mask_from_labels(labels)
    nominal = nominal_view("ap", mask_centroid_world(spine), 675.0)
    thetas = _along_spine(torch.zeros(5, 6, dtype=torch.float64), nominal, spine, torch.Generator().manual_seed(1))
    for theta in thetas:  # theta = 0 about the drawn voxel: that voxel sits at the isocentre of the moved view
        isocentre = invert_rigid(nominal.pose(theta)) @ torch.tensor([0.0, 0.0, 675.0, 1.0], dtype=torch.float64)
        index = torch.linalg.solve(spine.world_from_index, isocentre)[:3].round().long()
        assert spine.data[index[2], index[1], index[0]] != 0
        assert torch.allclose(theta[:3], torch.zeros(3, dtype=torch.float64), atol=1e-9)  # a pure shift of the view
    assert float(thetas[:, 3:].abs().max()) > 5.0  # the voxels are spread along the spine, not at its centroid
    voxels = torch.nonzero(spine.data).flip(-1).double() @ spine.world_from_index[:3, :3].T + spine.world_from_index[:3, 3]
    along = voxels @ nominal.camera_from_world[1, :3]
    low, high = float(along.min()), float(along.max())
    central = _along_spine(torch.zeros(40, 6, dtype=torch.float64), nominal, spine, torch.Generator().manual_seed(2), 0.5)
    # theta's ty is the drawn voxel's head-to-foot offset from the centroid: within the middle half of the extent
    centroid_along = float(nominal.isocenter_world @ nominal.camera_from_world[1, :3])
    drawn = centroid_along - central[:, 4]
    assert float(drawn.min()) >= low + 0.25 * (high - low) - 1e-6 and float(drawn.max()) <= high - 0.25 * (high - low) + 1e-6


def test_benchmark_on_several_cts_reports_each_and_pooled(tmp_path):
    import shutil

    from sopi.benchmark_multi import ct_names, run_benchmarks

    assert ct_names(["a/ct.nii.gz", "b/ct.nii.gz", "c/scan.mha"]) == ["ct", "ct-2", "scan"]
    copy = tmp_path / "other" / sample_ct_path().name
    copy.parent.mkdir()
    shutil.copy(sample_ct_path(), copy)
    geometry = CArmGeometry(1011.7, 64, 64, (3.2, 3.2), source_to_isocenter_mm=675.0)
    out = tmp_path / "out"
    run_benchmarks([sample_ct_path(), copy], [sample_vertebrae_path(), sample_vertebrae_path()], out,
                   methods=["opt-gc"], protocol="paper", cases=1, seed=2, geometry=geometry)
    names = ct_names([sample_ct_path(), copy])
    per_ct = [list(csv.DictReader(open(out / name / "results.csv", encoding="utf-8"))) for name in names]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["pooled"]["opt-gc"]["cases"] == 2 and set(summary["per_ct"]) == set(names)
    pooled_mtre = sorted(float(rows[-1]["mtre_mm"]) for rows in per_ct)
    assert summary["pooled"]["opt-gc"]["mtre_mm_median"] == pytest.approx(sum(pooled_mtre) / 2)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Pooled" in report and all(f"## {name}" in report for name in names)
    with pytest.raises(Exception, match="one --mask"):
        run_benchmarks([sample_ct_path(), copy], [sample_vertebrae_path()], out, methods=["opt-gc"])
