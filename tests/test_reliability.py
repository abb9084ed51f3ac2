"""Hostile and odd inputs (docs/reliability.md): exit code 2 or InputError, one line naming the
file or field, inputs byte-identical, no output left behind."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sopi.cli import main
from sopi.drr import Projector
from sopi.errors import InputError
from sopi.geometry import CArmGeometry, nominal_view, save_pose
from sopi.io import read_ct, read_label_map, write_volume, write_xray
from sopi.volume import Volume

GEOMETRY = CArmGeometry(1000.0, 24, 24, (8.0, 8.0), source_to_isocenter_mm=650.0)
SPACING_MM = 3.0


def _tiny_ct() -> Volume:
    """A 24^3 CT at 3 mm: air, a soft-tissue cylinder and a bone block (HU)."""
    k, j, i = torch.meshgrid(*(torch.arange(24, dtype=torch.float32),) * 3, indexing="ij")
    data = torch.full((24, 24, 24), -1000.0)
    data[((j - 11.5) ** 2 + (i - 11.5) ** 2) < 100] = 40.0
    data[6:18, 12:16, 10:14] = 700.0
    affine = torch.diag(torch.tensor([SPACING_MM] * 3 + [1.0], dtype=torch.float64))
    return Volume(data.to(torch.int16), affine)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    """CT, labels, pose, geometry and X-ray files, small enough to make in every test."""
    ct = _tiny_ct()
    paths = {name: tmp_path / name for name in ("ct.nii.gz", "labels.nii.gz", "pose.json", "geometry.json", "xray.mha")}
    write_volume(paths["ct.nii.gz"], ct)
    labels = torch.zeros(24, 24, 24, dtype=torch.uint8)
    labels[6:18, 12:16, 10:14] = 20
    write_volume(paths["labels.nii.gz"], ct.with_data(labels))
    pose = nominal_view("ap", ct.center_world, GEOMETRY.source_to_isocenter_mm).camera_from_world
    save_pose(paths["pose.json"], pose)
    GEOMETRY.save(paths["geometry.json"])
    image = torch.rand(GEOMETRY.shape, generator=torch.Generator().manual_seed(0))
    write_xray(paths["xray.mha"], image, GEOMETRY)
    return paths


def _digest(paths) -> dict[Path, str]:
    return {Path(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def refused(capsys, args, inputs=(), outputs=(), code: int = 2) -> str:
    """Run the CLI; assert exit ``code``, one stderr line and no traceback, inputs unchanged, outputs absent."""
    before = _digest(inputs)
    try:
        status = main([str(arg) for arg in args])
    except SystemExit as exit_info:  # argparse's usage errors
        status = exit_info.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]  # tqdm bars on stderr aside
    assert status == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert _digest(inputs) == before
    for path in map(Path, outputs):
        assert not path.exists(), path
        if path.parent.is_dir():  # atomic writes use hidden temporaries named after the output
            assert not list(path.parent.glob(f".{path.name}.*")), "temporary left behind"
    return lines[0]


def _drr_args(files, out) -> list:
    return ["drr", files["ct.nii.gz"], "--pose", files["pose.json"], "--geometry", files["geometry.json"], "--out", out]


# --------------------------------------------------------------------------- 1: outputs that are inputs


def test_output_equal_to_an_input_is_refused(files, capsys, tmp_path):
    ct, labels, xray = files["ct.nii.gz"], files["labels.nii.gz"], files["xray.mha"]
    every = list(files.values())
    assert "is the input CT" in refused(capsys, _drr_args(files, ct), every)
    message = refused(capsys, [*_drr_args(files, labels), "--mask", labels], every)
    assert "--out" in message and "--mask" in message
    assert "is the input CT" in refused(capsys, ["segment", ct, "--out", ct], every)
    assert "--labels" in refused(capsys, ["segment", ct, "--labels", labels, "--out", labels], every)
    register = ["register", "--ct", ct, "--xray", xray]
    assert "is the input --xray" in refused(capsys, [*register, "--out", xray], every)
    fused_png = refused(capsys, [*register, "--out", tmp_path / "r.json", "--fused", ct], every, [tmp_path / "r.json"])
    assert "--fused" in fused_png and "is the input --ct" in fused_png
    other = tmp_path / "other.nii.gz"
    assert ".png" in refused(capsys, [*register, "--out", tmp_path / "r.json", "--fused", other], every, [other, tmp_path / "r.json"])
    os.link(ct, tmp_path / "hardlink.nii.gz")  # the same file under another name
    assert "is the input CT" in refused(capsys, _drr_args(files, tmp_path / "hardlink.nii.gz"), every)
    assert "is a folder" in refused(capsys, _drr_args(files, tmp_path), every)


# --------------------------------------------------------------------------- 2, 10, 16: damaged files


def test_truncated_and_corrupt_compressed_files_are_refused(files, capsys, tmp_path):
    raw = files["ct.nii.gz"].read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(raw[: len(raw) * 6 // 10])
    assert "truncated" in refused(capsys, ["segment", truncated, "--out", tmp_path / "m.nii.gz"], [truncated], [tmp_path / "m.nii.gz"])
    bad_crc = tmp_path / "bad_crc.nii.gz"
    damaged = bytearray(raw)
    damaged[-8] ^= 0xFF  # the CRC-32 of the gzip trailer
    bad_crc.write_bytes(bytes(damaged))
    assert "corrupt" in refused(capsys, ["segment", bad_crc, "--out", tmp_path / "m.nii.gz"], [bad_crc])
    # An uncompressed NIfTI cut short: SimpleITK would fill the rest with zeros.
    plain = tmp_path / "plain.nii"
    plain.write_bytes(gzip.decompress(raw)[:-2000])
    with pytest.raises(InputError, match=r"plain\.nii: the file is truncated"):
        read_ct(plain)


def test_the_check_alongside_the_reader_decides_the_error(files, tmp_path):
    """The integrity check runs in a second thread while the body reads: its error replaces the body's outcome
    (a finished read or a reader's own error), and a sound file lets the body's result and errors through."""
    from sopi.file_integrity import checked_alongside

    raw = files["ct.nii.gz"].read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(raw[: len(raw) * 6 // 10])
    read = []
    with pytest.raises(InputError, match=r"truncated\.nii\.gz: the compressed file is truncated"):
        with checked_alongside(truncated, "a CT volume"):
            read.append(truncated.read_bytes())  # the body finished: the check still has the last word
    assert read
    with pytest.raises(InputError, match="the compressed file is truncated"):
        with checked_alongside(truncated, "a CT volume"):
            raise InputError("the reader's own, less telling error")
    with pytest.raises(InputError, match="the reader's own"):
        with checked_alongside(files["ct.nii.gz"], "a CT volume"):
            raise InputError("the reader's own, less telling error")
    with checked_alongside(files["ct.nii.gz"], "a CT volume"):
        pass
    assert read_ct(files["ct.nii.gz"]).data.shape == torch.Size(sitk.GetArrayViewFromImage(sitk.ReadImage(str(files["ct.nii.gz"]))).shape)


def test_nan_in_a_nifti_file_is_seen(tmp_path):
    data = np.zeros((6, 7, 8), np.float32)
    data[1, 2, 3], data[2, 2, 2] = np.nan, np.inf
    for name in ("nan.nii.gz", "nan.nii", "nan.mha"):
        sitk.WriteImage(sitk.GetImageFromArray(data), str(tmp_path / name))
        with pytest.raises(InputError, match=rf"{name.replace('.', '.')}: 2 NaN or infinite value"):
            read_ct(tmp_path / name)
    # SimpleITK alone turns the NIfTI NaN into 0 (why the file itself is checked).
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "nan.nii.gz")))).all()


def test_truncated_metaimage_xray_says_truncated(files, capsys, tmp_path):
    for compressed in (False, True):
        path = tmp_path / f"x{int(compressed)}.mha"
        sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((64, 64)).astype(np.float32)), str(path), compressed)
        path.write_bytes(path.read_bytes()[:-3000])
        args = ["register", "--ct", files["ct.nii.gz"], "--xray", path, "--preset", "generic", "--out", tmp_path / "r.json"]
        message = refused(capsys, args, [path], [tmp_path / "r.json"])
        assert "truncated" in message and "No such file" not in message


# --------------------------------------------------------------------------- 3, 4, 5: geometry and sampling


@pytest.mark.parametrize(
    "change, field",
    [
        ({"pixel_spacing_mm": [float("nan"), 1.0]}, "pixel_spacing_mm"),
        ({"pixel_spacing_mm": [float("inf"), 1.0]}, "pixel_spacing_mm"),
        ({"principal_point_px": [float("nan"), 3.0]}, "principal_point_px"),
        ({"principal_point_px": [1e300, 3.0]}, "principal_point_px"),
        ({"sdd_mm": 1e300}, "sdd_mm"),
        ({"rows": 200000, "cols": 200000}, "rows/cols"),
    ],
)
def test_impossible_geometry_is_refused(files, capsys, tmp_path, change, field):
    data = {**GEOMETRY.to_dict(), **change}
    bad = tmp_path / "bad_geometry.json"
    bad.write_text(json.dumps(data))
    message = refused(capsys, [*_drr_args(files, tmp_path / "d.mha")[:-4], "--geometry", bad, "--out", tmp_path / "d.mha"], [bad], [tmp_path / "d.mha"])
    assert "bad_geometry.json" in message and field in message


def test_geometry_api_refuses_non_finite_values():
    with pytest.raises(InputError, match="pixel_spacing_mm"):
        CArmGeometry(1000.0, 64, 64, (float("nan"), 1.0))
    with pytest.raises(InputError, match="sdd_mm"):
        CArmGeometry(float("inf"), 64, 64, (1.0, 1.0))


def test_projector_checks_memory_and_step(monkeypatch):
    volume = _tiny_ct().to(torch.float32)
    monkeypatch.setattr("sopi.validate.available_memory_bytes", lambda: 1000)  # bytes
    with pytest.raises(InputError, match=r"projector: a 24x24 detector: needs about .* GiB"):
        Projector(volume, GEOMETRY)
    monkeypatch.undo()
    with pytest.raises(InputError, match="step_mm"):
        Projector(volume, GEOMETRY, step_mm=1e-6)
    monkeypatch.setattr("sopi.drr.MAX_PLANES", 20)  # a 72 mm CT at 0.5 mm needs about 145 planes
    pose = nominal_view("ap", volume.center_world, 650.0).camera_from_world
    with pytest.raises(InputError, match=r"step_mm=0.5 needs .* samples per ray"):
        Projector(volume, GEOMETRY, step_mm=0.5)(pose)


def test_cli_step_below_the_minimum_is_refused_quickly(files, capsys, tmp_path):
    out = tmp_path / "d.mha"
    assert "step_mm" in refused(capsys, [*_drr_args(files, out), "--step-mm", "1e-6"], list(files.values()), [out])
    assert "--step-mm" in refused(capsys, [*_drr_args(files, out), "--step-mm", "nan"], list(files.values()), [out])


# --------------------------------------------------------------------------- 6: the CT behind the source


def _behind_pose(files) -> torch.Tensor:
    ct = read_ct(files["ct.nii.gz"])
    nominal = nominal_view("ap", ct.center_world, 650.0).camera_from_world
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))  # 180 deg about x: the CT is at z = -650
    return flip @ nominal


def test_pose_behind_the_source_is_refused(files, capsys, tmp_path):
    save_pose(tmp_path / "behind.json", _behind_pose(files))
    out = tmp_path / "d.mha"
    args = ["drr", files["ct.nii.gz"], "--pose", tmp_path / "behind.json", "--geometry", files["geometry.json"], "--out", out]
    assert "behind the X-ray source" in refused(capsys, args, [files["ct.nii.gz"]], [out])
    register = ["register", "--ct", files["ct.nii.gz"], "--xray", files["xray.mha"], "--init", tmp_path / "behind.json", "--out", tmp_path / "r.json"]
    message = refused(capsys, register, [files["xray.mha"]], [tmp_path / "r.json"])
    assert "initial_pose" in message and "behind the X-ray source" in message


def test_projector_integrates_only_in_front_of_the_source(files):
    ct = read_ct(files["ct.nii.gz"])
    volume = ct.with_data((ct.data > 0).to(torch.float32))
    projector = Projector(volume, GEOMETRY)
    behind = _behind_pose(files)
    assert float(projector(behind).abs().max()) == 0.0  # not the point-mirrored image
    in_front = projector(nominal_view("ap", ct.center_world, 650.0).camera_from_world)
    assert float(in_front.max()) > 10.0  # tens of mm of tissue along the central rays


def test_projector_refuses_non_finite_poses(files):
    ct = read_ct(files["ct.nii.gz"])
    pose = nominal_view("ap", ct.center_world, 650.0).camera_from_world.clone()
    pose[0, 3] = float("nan")
    with pytest.raises(InputError, match="NaN or infinite"):
        Projector(ct.with_data(ct.data.float()), GEOMETRY)(pose)


# --------------------------------------------------------------------------- 7: impossible content


def test_uniform_block_is_not_segmented_or_registered(files, capsys, tmp_path):
    block = tmp_path / "block.nii.gz"
    write_volume(block, Volume(torch.full((40, 40, 40), 1000, dtype=torch.int16), torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))))
    out = tmp_path / "spine.nii.gz"
    assert "% of the body is above" in refused(capsys, ["segment", block, "--out", out], [block], [out])
    register = ["register", "--ct", block, "--xray", files["xray.mha"], "--out", tmp_path / "r.json"]
    assert "barely vary" in refused(capsys, register, [block, files["xray.mha"]], [tmp_path / "r.json"])


def test_a_ct_is_not_a_label_map(files, capsys, tmp_path):
    ct = files["ct.nii.gz"]
    out = tmp_path / "spine.nii.gz"
    assert "not a CT" in refused(capsys, ["segment", ct, "--labels", ct, "--out", out], [ct], [out])
    register = ["register", "--ct", ct, "--xray", files["xray.mha"], "--mask", ct, "--out", tmp_path / "r.json"]
    assert "not a CT" in refused(capsys, register, [ct], [tmp_path / "r.json"])
    write_volume(tmp_path / "many.nii.gz", Volume(torch.arange(8000, dtype=torch.int16).reshape(20, 20, 20), torch.eye(4, dtype=torch.float64)))
    with pytest.raises(InputError, match=r"many\.nii\.gz: holds 8000 distinct values"):
        read_label_map(tmp_path / "many.nii.gz")


def test_an_xray_without_signal_is_refused(files, capsys, tmp_path):
    flat = tmp_path / "flat.mha"
    write_xray(flat, torch.zeros(GEOMETRY.shape), GEOMETRY)
    register = ["register", "--ct", files["ct.nii.gz"], "--xray", flat, "--out", tmp_path / "r.json"]
    message = refused(capsys, register, [flat], [tmp_path / "r.json"])
    assert "flat.mha" in message and "contrast" in message


# --------------------------------------------------------------------------- 8, 19: numbers on the command line


@pytest.mark.parametrize(
    "args, option",
    [
        (["benchmark", "--ct", "c", "--mask", "m", "--out", "o", "--cases", "0"], "--cases"),
        (["benchmark", "--ct", "c", "--mask", "m", "--out", "o", "--cases", "-5"], "--cases"),
        (["train", "rtpi", "--ct", "c", "--mask", "m", "--out", "o", "--batch-size", "0"], "--batch-size"),
        (["train", "rtpi", "--ct", "c", "--mask", "m", "--out", "o", "--max-minutes", "-1"], "--max-minutes"),
        (["register", "--ct", "c", "--xray", "x", "--out", "o", "--seed", "-1"], "--seed"),
        (["register", "--ct", "c", "--xray", "x", "--out", "o", "--iteration-scale", "inf"], "--iteration-scale"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(capsys, tmp_path, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)
    message = refused(capsys, args, outputs=[tmp_path / "o"])
    assert option in message and "expected" in message


def test_benchmark_with_no_method_is_refused(files, capsys, tmp_path):
    args = ["benchmark", "--ct", files["ct.nii.gz"], "--mask", files["labels.nii.gz"], "--out", tmp_path / "bench", "--methods", ","]
    assert "--methods" in refused(capsys, args, [files["ct.nii.gz"]], [tmp_path / "bench"])


# --------------------------------------------------------------------------- 9, 12: poses through the API


def test_register_api_checks_the_initial_pose(files):
    from sopi.registration import register

    ct, xray = files["ct.nii.gz"], files["xray.mha"]
    good = nominal_view("ap", read_ct(ct).center_world, 650.0).camera_from_world
    scaled = good.clone()
    scaled[:3, :3] *= 1.5
    with pytest.raises(InputError, match=r"initial_pose: not a rigid transform .*singular values 1\.5"):
        register(ct, xray, initial_pose=scaled)
    broken = good.clone()
    broken[1, 3] = float("nan")
    with pytest.raises(InputError, match=r"initial_pose: 1 entry is not finite \(\[1\]\[3\]=nan\)"):
        register(ct, xray, initial_pose=broken)
    with pytest.raises(InputError, match=r"initial_pose: expected a 4x4 matrix, got shape \(3, 3\)"):
        register(ct, xray, initial_pose=torch.eye(3))
    with pytest.raises(InputError, match="seed"):
        register(ct, xray, seed=-1)


def test_pose_file_with_nan_says_what_is_not_finite(files, capsys, tmp_path):
    pose = tmp_path / "nan_pose.json"
    matrix = torch.eye(4).tolist()
    matrix[0][3] = float("nan")
    pose.write_text(json.dumps({"matrix": matrix}))
    args = ["drr", files["ct.nii.gz"], "--pose", pose, "--geometry", files["geometry.json"], "--out", tmp_path / "d.mha"]
    message = refused(capsys, args, [pose], [tmp_path / "d.mha"])
    assert "nan_pose.json" in message and "[0][3]=nan" in message


# --------------------------------------------------------------------------- 13: empty masks name their file


def test_empty_mask_names_the_file(files, capsys, tmp_path):
    empty = tmp_path / "empty_mask.nii.gz"
    write_volume(empty, read_ct(files["ct.nii.gz"]).with_data(torch.zeros(24, 24, 24, dtype=torch.uint8)))
    out = tmp_path / "case"
    for args, outputs in (
        (["simulate", files["ct.nii.gz"], "--mask", empty, "--out", out, "--preset", "generic"], [out]),
        (["register", "--ct", files["ct.nii.gz"], "--xray", files["xray.mha"], "--mask", empty, "--out", tmp_path / "r.json"], [tmp_path / "r.json"]),
        (["benchmark", "--ct", files["ct.nii.gz"], "--mask", empty, "--out", out, "--cases", "1"], [out]),
    ):
        message = refused(capsys, args, [empty], outputs)
        assert "empty_mask.nii.gz" in message and "mask is empty" in message and "mask_centroid_world" not in message


# --------------------------------------------------------------------------- 14: where outputs go


def test_simulate_into_an_existing_file_or_an_unwritable_folder(files, capsys, tmp_path, monkeypatch):
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    args = ["simulate", files["ct.nii.gz"], "--preset", "generic"]
    assert "exists and is a file" in refused(capsys, [*args, "--out", existing], [existing])
    import tempfile

    def no_permission(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", no_permission)  # root ignores folder permissions: simulate the OS refusing
    message = refused(capsys, [*args, "--out", tmp_path / "case"], [files["ct.nii.gz"]], [tmp_path / "case" / "xray.mha"])
    assert "permission denied" in message and "xray.mha" in message


# --------------------------------------------------------------------------- 15: a CT too small to hold a spine


def test_tiny_ct_is_called_too_small(capsys, tmp_path):
    tiny = tmp_path / "tiny.nii.gz"
    write_volume(tiny, Volume(torch.full((2, 2, 2), 500.0), torch.diag(torch.tensor([1.5, 1.5, 1.5, 1.0], dtype=torch.float64))))
    message = refused(capsys, ["segment", tiny, "--out", tmp_path / "m.nii.gz"], [tiny], [tmp_path / "m.nii.gz"])
    assert "2 x 2 x 2 voxels" in message and "too small" in message


# --------------------------------------------------------------------------- 17: geometry hints, DICOM modality


def test_geometry_hints_name_the_right_option(files, capsys, tmp_path, shared_data):
    nifti = tmp_path / "xray.nii.gz"
    write_xray(nifti, torch.rand(GEOMETRY.shape, generator=torch.Generator().manual_seed(1)), GEOMETRY)
    register = ["register", "--ct", files["ct.nii.gz"], "--out", tmp_path / "r.json"]
    message = refused(capsys, [*register, "--xray", nifti], [nifti])
    assert "--preset" in message and "--geometry FILE.json" in message and "working_shape" not in message
    message = refused(capsys, [*register, "--xray", nifti, "--geometry", "perlove-plx118f"], [nifti])
    assert "use --preset perlove-plx118f" in message
    ct_slice = sorted((shared_data / "totalseg_ct_dicom").glob("CT.*"))[0]
    message = refused(capsys, [*register, "--xray", ct_slice, "--preset", "generic"], [ct_slice])
    assert "Modality CT" in message and "expected a projection X-ray" in message


# --------------------------------------------------------------------------- 18: models that hold code


def test_model_that_holds_code_is_refused_in_one_line(files, capsys, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should never run",))

    weights = tmp_path / "evil.pt"
    torch.save({"weight": Payload()}, weights)
    shipped = Path(__file__).resolve().parents[1] / "SOPIRegistration" / "Resources" / "Models" / "rtpi_sample_ct.json"
    record = json.loads(shipped.read_text(encoding="utf-8"))
    record.update(weights="evil.pt", sha256=hashlib.sha256(weights.read_bytes()).hexdigest())  # a matching record
    (tmp_path / "evil.json").write_text(json.dumps(record))
    args = ["register", "--ct", files["ct.nii.gz"], "--xray", files["xray.mha"], "--mask", files["labels.nii.gz"],
            "--method", "rtpi", "--model", weights, "--out", tmp_path / "r.json"]
    message = refused(capsys, args, [weights], [tmp_path / "r.json"])
    assert "not a SOPIRegistration model file" in message and "refused" in message and "weights_only" not in message


def test_ct_content_check_on_a_large_volume_judges_its_percentiles_from_a_subsample():
    from sopi.errors import InputError
    from sopi.validate import check_ct_content

    generator = torch.Generator().manual_seed(0)
    flat = torch.full((40, 100, 100), 40.0) + torch.randn(40, 100, 100, generator=generator)  # 400 000 voxels of soft tissue
    flat[0, :5] = 1500.0  # a few bright voxels (under 1 %) do not make it a CT of anatomy
    with pytest.raises(InputError, match="barely vary"):
        check_ct_content(flat, "flat.nii.gz")
    anatomy = flat.clone()
    anatomy[:, :, :30] = -1000.0  # air beside the body
    anatomy[:, 40:50, 40:50] = 700.0  # bone
    check_ct_content(anatomy, "anatomy.nii.gz")
