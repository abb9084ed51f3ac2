"""DICOM X-rays as they come (issue 12, item 4): intensity tags, rescale, frames, shutters.

Files are written with pydicom carrying each tag with a known answer; the real
radiographs are pydicom's and pydicom-data's CR files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sopi.errors import InputError
from sopi.geometry import CArmGeometry
from sopi.io_xray import XRay, read_xray

pydicom = pytest.importorskip("pydicom")

SOP_CLASSES = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "XA": "1.2.840.10008.5.1.4.1.1.12.1",
    "RF": "1.2.840.10008.5.1.4.1.1.12.2",
}


def write_dicom(path: Path, stored: np.ndarray, modality: str = "DX", photometric: str = "MONOCHROME2",
                bits: int = 12, signed: bool = False, **tags) -> Path:
    """A projection X-ray written by pydicom: ``stored`` is ``(rows, cols)`` or ``(frames, rows, cols)``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SOP_CLASSES[modality], generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SOP_CLASSES[modality], meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PhotometricInterpretation = modality, photometric
    ds.Rows, ds.Columns, ds.SamplesPerPixel = stored.shape[-2], stored.shape[-1], 1
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, int(signed)
    ds.DistanceSourceToDetector, ds.ImagerPixelSpacing = "1000", [0.2, 0.2]
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(stored, dtype=np.int16 if signed else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


#: Known line integrals on a 6 x 8 detector: 0 (air) in the corner, up to 3.
LINE_INTEGRALS = np.linspace(0.0, 3.0, 48).reshape(6, 8)


# --------------------------------------------------------------------------- rescale


@pytest.mark.parametrize("modality", sorted(SOP_CLASSES))
def test_rescale_slope_and_intercept_are_applied(tmp_path: Path, modality: str) -> None:
    stored = np.array([[0, 100, 1000], [2000, 4095, 7]], np.uint16)
    plain = read_xray(write_dicom(tmp_path / "m2.dcm", stored, modality, RescaleSlope="0.5", RescaleIntercept="-100"))
    np.testing.assert_array_equal(plain.image.numpy(), stored * 0.5 - 100)
    assert (plain.metadata["rescale_slope"], plain.metadata["rescale_intercept"]) == (0.5, -100.0)
    assert plain.metadata["polarity_applied"] == "bone-bright" and plain.metadata["polarity_values"] == "displayed"
    # MONOCHROME1 without intensity tags: displayed values (stored inverted over 12 bits, then rescaled).
    inverted = read_xray(write_dicom(tmp_path / "m1.dcm", stored, modality, "MONOCHROME1", RescaleSlope="2", RescaleIntercept="10"))
    np.testing.assert_array_equal(inverted.image.numpy(), (4095.0 - stored) * 2 + 10)
    assert inverted.field_mask is None and "number_of_frames" not in inverted.metadata


# --------------------------------------------------------------------------- intensity tags


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_lin_intensities_read_back_as_line_integrals(tmp_path: Path, photometric: str) -> None:
    intensity = 4000.0 * np.exp(-LINE_INTEGRALS)
    lin = write_dicom(tmp_path / "lin.dcm", np.round(intensity), "RF", photometric,
                      PixelIntensityRelationship="LIN", PixelIntensityRelationshipSign=1)
    xray = read_xray(lin)
    np.testing.assert_allclose(xray.image.numpy(), LINE_INTEGRALS, atol=3e-3)  # rounding: <= 0.5 / 200
    assert xray.metadata["polarity_applied"] == "intensity" and "LIN" in xray.metadata["polarity_reason"]
    # Rescaled: stored (I - 10) / 2, so the modality values are the intensities again.
    rescaled = write_dicom(tmp_path / "lin_rescaled.dcm", np.round((intensity - 10.0) / 2.0), "DX", photometric,
                           RescaleSlope="2", RescaleIntercept="10", PixelIntensityRelationship="LIN",
                           PixelIntensityRelationshipSign=1)
    np.testing.assert_allclose(read_xray(rescaled).image.numpy(), LINE_INTEGRALS, atol=6e-3)
    # Sign -1: larger stored values = less intensity, zero intensity at the top of the 12-bit range.
    falling = write_dicom(tmp_path / "lin_falling.dcm", 4095 - np.round(intensity), "DX", photometric,
                          PixelIntensityRelationship="LIN", PixelIntensityRelationshipSign=-1)
    np.testing.assert_allclose(read_xray(falling).image.numpy(), LINE_INTEGRALS, atol=3e-3)
    # The caller's polarity wins: the displayed values come back untouched.
    given = read_xray(lin, polarity="bone-bright")
    displayed = np.round(intensity) if photometric == "MONOCHROME2" else 4095.0 - np.round(intensity)
    np.testing.assert_array_equal(given.image.numpy(), displayed.astype(np.float32))
    assert given.metadata["polarity_applied"] == "bone-bright" and given.metadata["polarity_reason"] == "given by the caller"


def test_log_with_either_sign_and_photometric_is_bone_bright(tmp_path: Path) -> None:
    """LOG data: sign +1 (bone dark in the values) and -1 (bone bright), MONOCHROME1 and 2: one answer."""
    gain = 500.0
    rising = np.round(3000 - gain * LINE_INTEGRALS)  # sign +1: more intensity = larger value
    falling = np.round(500 + gain * LINE_INTEGRALS)  # sign -1
    expected = gain * LINE_INTEGRALS  # up to an offset: air (p = 0) is the smallest
    results = {}
    for sign, stored in ((1, rising), (-1, falling)):
        for photometric in ("MONOCHROME2", "MONOCHROME1"):
            path = write_dicom(tmp_path / f"log{sign}{photometric}.dcm", stored, "XA", photometric,
                               PixelIntensityRelationship="LOG", PixelIntensityRelationshipSign=sign)
            image = read_xray(path).image.numpy().astype(np.float64)
            np.testing.assert_allclose(image - image.min(), expected, atol=0.51)
            assert image[5, 7] > image[0, 0]  # the most attenuated pixel is the brightest
            results[sign, photometric] = image
    np.testing.assert_array_equal(results[1, "MONOCHROME1"], results[1, "MONOCHROME2"])
    assert read_xray(tmp_path / "log1MONOCHROME2.dcm").metadata["polarity_applied"] == "bone-dark"
    assert read_xray(tmp_path / "log-1MONOCHROME1.dcm").metadata["polarity_applied"] == "bone-bright"


def test_intensity_tags_absent_or_partial(tmp_path: Path) -> None:
    stored = np.round(3000 - 500 * LINE_INTEGRALS)
    # LOG without a sign: taken as +1 (values grow with intensity).
    xray = read_xray(write_dicom(tmp_path / "log.dcm", stored, "XA", PixelIntensityRelationship="LOG"))
    np.testing.assert_array_equal(xray.image.numpy(), (stored.max() - stored).astype(np.float32))
    assert "absent" in xray.metadata["polarity_reason"]
    # A sign alone gives the direction, without a log.
    xray = read_xray(write_dicom(tmp_path / "sign.dcm", stored, "DX", PixelIntensityRelationshipSign=1))
    np.testing.assert_array_equal(xray.image.numpy(), (stored.max() - stored).astype(np.float32))
    # DISP (display-ready) and no tags: values kept, as before.
    for name, tags in (("disp.dcm", {"PixelIntensityRelationship": "DISP"}), ("none.dcm", {})):
        xray = read_xray(write_dicom(tmp_path / name, stored, "RF", **tags))
        np.testing.assert_array_equal(xray.image.numpy(), stored.astype(np.float32))
        assert xray.metadata["polarity_applied"] == "bone-bright" and xray.metadata["polarity_values"] == "displayed"
    # A negative slope flips the direction in the modality values.
    xray = read_xray(write_dicom(tmp_path / "neg.dcm", 4095 - stored, "DX", RescaleSlope="-1", RescaleIntercept="4095",
                                 PixelIntensityRelationship="LOG", PixelIntensityRelationshipSign=-1))
    np.testing.assert_allclose(xray.image.numpy(), stored.max() - stored)


def test_settled_polarity_reads_the_values_as_read_xray_reads_the_file(tmp_path: Path) -> None:
    """``settled_polarity``: what ``read_xray`` decides under auto, with the values it applies it to: the polarity
    applied to those values is ``read_xray``'s image, for every intensity-tag case and every frame of a cine; None
    where nothing is settled."""
    from sopi.io_xray import apply_polarity, settled_polarity

    intensity = np.round(4000.0 * np.exp(-LINE_INTEGRALS))
    log = np.round(3000 - 500 * LINE_INTEGRALS)
    cases = {  # name: (stored, photometric, tags, expected polarity)
        "lin.dcm": (intensity, "MONOCHROME1", {"PixelIntensityRelationship": "LIN", "PixelIntensityRelationshipSign": 1}, "intensity"),
        "lin_falling.dcm": (4095 - intensity, "MONOCHROME2", {"PixelIntensityRelationship": "LIN", "PixelIntensityRelationshipSign": -1},
                            "intensity"),
        "log_rising.dcm": (log, "MONOCHROME1", {"PixelIntensityRelationship": "LOG", "PixelIntensityRelationshipSign": 1}, "bone-dark"),
        "log_falling.dcm": (4095 - log, "MONOCHROME2", {"PixelIntensityRelationship": "LOG", "PixelIntensityRelationshipSign": -1},
                            "bone-bright"),
        "rescaled.dcm": (np.round((log - 10.0) / 2.0), "MONOCHROME2", {"RescaleSlope": "2", "RescaleIntercept": "10",
                                                                         "PixelIntensityRelationship": "LOG"}, "bone-dark"),
    }
    for name, (stored, photometric, tags, polarity) in cases.items():
        path = write_dicom(tmp_path / name, stored, "DX", photometric, **tags)
        values, displayed, decided, reason, shutter = settled_polarity(path)
        expected = read_xray(path)
        assert shutter is None and expected.field_mask is None
        assert values.shape == displayed.shape == (1, *stored.shape)
        np.testing.assert_array_equal(displayed[0], read_xray(path, polarity="bone-bright").image.numpy())  # what GDCM shows
        assert decided == polarity == expected.metadata["polarity_applied"] and reason in expected.metadata["polarity_reason"]
        np.testing.assert_allclose(apply_polarity(values[0], decided, path).astype(np.float32), expected.image.numpy(), rtol=1e-6)
    # the LOG values are the modality values (rescaled where the file says so), whatever the photometric interpretation
    np.testing.assert_array_equal(settled_polarity(tmp_path / "log_rising.dcm").values[0], log)
    np.testing.assert_array_equal(settled_polarity(tmp_path / "rescaled.dcm").values[0], np.round((log - 10.0) / 2.0) * 2 + 10)
    # a cine: every frame, each read as read_xray reads that frame
    cine = write_dicom(tmp_path / "cine.dcm", np.stack([log, np.round(0.8 * log + 100)]), "XA", "MONOCHROME1", PixelIntensityRelationship="LOG",
                       PixelIntensityRelationshipSign=1)
    settled = settled_polarity(cine)
    assert settled.values.shape == (2, *log.shape) and settled.polarity == "bone-dark"
    for frame in (0, 1):
        np.testing.assert_allclose(apply_polarity(settled.values[frame], settled.polarity, cine).astype(np.float32),
                                   read_xray(cine, frame=frame).image.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(settled.values[1], np.round(0.8 * log + 100))
    # the shutters come with it: read_xray's field mask of the file
    shuttered = write_dicom(tmp_path / "shutter.dcm", log, "XA", PixelIntensityRelationship="LOG", ShutterShape="RECTANGULAR", **RECT_TAGS)
    field = settled_polarity(shuttered).field_mask
    assert field is not None and field.dtype == bool and 0 < field.sum() < field.size
    np.testing.assert_array_equal(field, read_xray(shuttered).field_mask.numpy())
    # nothing settled: display-ready or untagged DICOM, a file that is not DICOM
    assert settled_polarity(write_dicom(tmp_path / "disp.dcm", log, "RF", PixelIntensityRelationship="DISP")) is None
    assert settled_polarity(write_dicom(tmp_path / "none.dcm", log, "RF")) is None
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(log.astype(np.float32)), str(tmp_path / "plain.mha"))
    assert settled_polarity(tmp_path / "plain.mha") is None


# --------------------------------------------------------------------------- frames


def test_multi_frame_fluoroscopy(tmp_path: Path) -> None:
    frames = (np.arange(5)[:, None, None] * 100 + np.arange(12).reshape(3, 4)[None] * 7).astype(np.uint16)
    frames[3, 1, 2] = 999  # frames differ in more than an offset
    path = write_dicom(tmp_path / "cine.dcm", frames, "XA")
    with pytest.raises(InputError) as info:
        read_xray(path)
    message = str(info.value)
    assert "cine.dcm" in message and "5 frames" in message and "--frame INDEX" in message and "--frame mean" in message
    second = read_xray(path, frame=2)
    np.testing.assert_array_equal(second.image.numpy(), frames[2].astype(np.float32))
    assert (second.metadata["number_of_frames"], second.metadata["frame"]) == (5, 2)
    np.testing.assert_array_equal(read_xray(path, frame=-1).image.numpy(), frames[4].astype(np.float32))
    mean = read_xray(path, frame="mean")
    np.testing.assert_allclose(mean.image.numpy(), frames.astype(np.float64).mean(axis=0), rtol=0, atol=1e-4)
    assert mean.metadata["frame"] == "mean" and mean.image.shape == (3, 4)
    for bad, pattern in ((5, r"cine\.dcm.*frame 5.*5 frame.*\(0028,0008\)"), (-6, "out of range"),
                         ("median", r"cine\.dcm: frame 'median'.*'mean'"), (True, "frame True"), (1.0, "frame 1.0")):
        with pytest.raises(InputError, match=pattern) as info:
            read_xray(path, frame=bad)
        assert "\n" not in str(info.value)
    single = write_dicom(tmp_path / "single.dcm", frames[1], "DX")
    np.testing.assert_array_equal(read_xray(single, frame=0).image.numpy(), frames[1].astype(np.float32))
    with pytest.raises(InputError, match=r"single\.dcm.*frame 1 is out of range"):
        read_xray(single, frame=1)


def test_mean_of_lin_frames_averages_intensities(tmp_path: Path) -> None:
    intensity = 3500.0 * np.exp(-LINE_INTEGRALS)  # 1.1 x 3500 fits in 12 bits
    frames = np.stack([np.round(intensity * 0.9), np.round(intensity * 1.1)])  # dose fluctuates frame to frame
    path = write_dicom(tmp_path / "lin_cine.dcm", frames, "RF", PixelIntensityRelationship="LIN", PixelIntensityRelationshipSign=1)
    np.testing.assert_allclose(read_xray(path, frame="mean").image.numpy(), LINE_INTEGRALS, atol=3e-3)


# --------------------------------------------------------------------------- shutters


def _mask(text: str) -> np.ndarray:
    return np.array([[c == "#" for c in line] for line in text.split()], dtype=bool)


#: 6 x 8 images; '#' = exposed. Rectangle: columns 2..6, rows 2..5 (DICOM 1-based).
RECTANGLE = _mask("""
........
.#####..
.#####..
.#####..
.#####..
........
""")
#: Circle centred on row 3, column 5, radius 2 (pixel centres within 2 pixels).
CIRCLE = _mask("""
....#...
...###..
..#####.
...###..
....#...
........
""")
#: Triangle with vertices (row, col) (1, 1), (1, 8), (6, 1): centres on the edges count as exposed.
TRIANGLE = _mask("""
########
######..
#####...
###.....
##......
#.......
""")
STORED = np.full((6, 8), 1000, np.uint16)
RECT_TAGS = {"ShutterLeftVerticalEdge": 2, "ShutterRightVerticalEdge": 6, "ShutterUpperHorizontalEdge": 2,
             "ShutterLowerHorizontalEdge": 5}
CIRCLE_TAGS = {"CenterOfCircularShutter": [3, 5], "RadiusOfCircularShutter": 2}
TRIANGLE_TAGS = {"VerticesOfThePolygonalShutter": [1, 1, 1, 8, 6, 1]}


def test_triangle_expectation_by_hand() -> None:
    # Inside or on the hypotenuse from (row 1, col 8) to (row 6, col 1): (r - 1) / 5 + (c - 1) / 7 <= 1.
    by_formula = np.array([[(r - 1) * 7 + (c - 1) * 5 <= 35 for c in range(1, 9)] for r in range(1, 7)])
    np.testing.assert_array_equal(TRIANGLE, by_formula)


@pytest.mark.parametrize(
    ("shape", "tags", "expected"),
    [
        ("RECTANGULAR", RECT_TAGS, RECTANGLE),
        ("CIRCULAR", CIRCLE_TAGS, CIRCLE),
        ("POLYGONAL", TRIANGLE_TAGS, TRIANGLE),
        (["RECTANGULAR", "CIRCULAR"], {**RECT_TAGS, **CIRCLE_TAGS}, RECTANGLE & CIRCLE),
        (["RECTANGULAR", "CIRCULAR", "POLYGONAL"], {**RECT_TAGS, **CIRCLE_TAGS, **TRIANGLE_TAGS}, RECTANGLE & CIRCLE & TRIANGLE),
    ],
)
def test_shutter_gives_the_exposed_field(tmp_path: Path, shape, tags: dict, expected: np.ndarray) -> None:
    xray = read_xray(write_dicom(tmp_path / "shutter.dcm", STORED, "DX", ShutterShape=shape, **tags))
    assert isinstance(xray.field_mask, torch.Tensor) and xray.field_mask.dtype == torch.bool
    np.testing.assert_array_equal(xray.field_mask.numpy(), expected)
    shapes = [shape] if isinstance(shape, str) else shape
    assert [note.split()[-1] for note in xray.metadata["field_mask_source"]] == shapes


def test_collimator_and_shutter_intersect_and_resize(tmp_path: Path) -> None:
    stored = np.full((6, 8), 1000, np.uint16)
    path = write_dicom(tmp_path / "both.dcm", stored, "XA", ShutterShape="RECTANGULAR", **RECT_TAGS,
                       CollimatorShape="CIRCULAR", CenterOfCircularCollimator=[3, 5], RadiusOfCircularCollimator=2)
    xray = read_xray(path)
    np.testing.assert_array_equal(xray.field_mask.numpy(), RECTANGLE & CIRCLE)
    binned = read_xray(path, working_shape=(3, 4))
    blocks = (RECTANGLE & CIRCLE).reshape(3, 2, 4, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(binned.field_mask.numpy(), blocks > 0.5)
    assert binned.field_mask.dtype == torch.bool and binned.field_mask.shape == binned.image.shape
    # Block (0, 2) is exactly half exposed: not exposed (more than half is needed).
    assert binned.field_mask.numpy().tolist() == [[False, False, False, False], [False, True, True, False], [False, False, False, False]]
    bitmap = read_xray(write_dicom(tmp_path / "bitmap.dcm", stored, "DX", ShutterShape="BITMAP"))
    assert bitmap.field_mask is None and "ignored" in bitmap.metadata["field_mask_source"][0]


@pytest.mark.parametrize(
    ("tags", "pattern"),
    [
        ({"ShutterShape": "RECTANGULAR", "ShutterLeftVerticalEdge": 2, "ShutterRightVerticalEdge": 6,
          "ShutterUpperHorizontalEdge": 2}, r"RECTANGULAR needs ShutterLowerHorizontalEdge \(0018,1608\)"),
        ({"ShutterShape": "CIRCULAR", "CenterOfCircularShutter": [3, 5]}, r"RadiusOfCircularShutter \(0018,1612\)"),
        ({"ShutterShape": "CIRCULAR", "CenterOfCircularShutter": [3, 5], "RadiusOfCircularShutter": 0}, r"\(0018,1612\) is 0"),
        ({"ShutterShape": "POLYGONAL", "VerticesOfThePolygonalShutter": [1, 1, 2, 2]}, r"\(0018,1620\).*at least 3 vertices"),
        ({"ShutterShape": "OVAL"}, r"ShutterShape \(0018,1600\) has 'OVAL'"),
        ({"ShutterShape": "RECTANGULAR", **{**RECT_TAGS, "ShutterLeftVerticalEdge": 7}}, r"left 7 > right 6"),
        ({"ShutterShape": "CIRCULAR", "CenterOfCircularShutter": [30, 50], "RadiusOfCircularShutter": 2}, "no pixel exposed"),
        ({"PixelIntensityRelationship": "LOG", "PixelIntensityRelationshipSign": 2}, r"\(0028,1041\) is '2'"),
        ({"RescaleSlope": "0"}, r"RescaleSlope \(0028,1053\) is 0"),
    ],
)
def test_bad_tags_give_one_line_naming_file_and_tag(tmp_path: Path, tags: dict, pattern: str) -> None:
    path = write_dicom(tmp_path / "bad.dcm", STORED, "DX", **tags)
    with pytest.raises(InputError, match=r"bad\.dcm: .*" + pattern) as info:
        read_xray(path)
    assert "\n" not in str(info.value)


def test_xray_field_mask_contract() -> None:
    geometry = CArmGeometry(1000.0, 2, 3, (0.5, 0.5))
    image = torch.zeros(2, 3)
    assert XRay(image, geometry).field_mask is None
    assert XRay(image, geometry, field_mask=torch.ones(2, 3, dtype=torch.bool)).field_mask.all()
    for bad in (torch.ones(2, 3), torch.ones(3, 2, dtype=torch.bool)):
        with pytest.raises(InputError, match="field_mask"):
            XRay(image, geometry, field_mask=bad)


# --------------------------------------------------------------------------- real radiographs


def _pydicom_cr_files() -> list[Path]:
    folder = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "77654033"
    return sorted(p for p in folder.glob("CR*/*") if p.is_file())


def test_real_cr_with_rescale_and_monochrome1() -> None:
    """pydicom's Agfa CR files: MONOCHROME1, 12 bits, RescaleSlope 0.684, RescaleIntercept 200 (optical density)."""
    files = _pydicom_cr_files()
    if not files:
        pytest.skip("pydicom's CR test files absent")
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.Modality == "CR" and ds.PhotometricInterpretation == "MONOCHROME1"
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        xray = read_xray(path, geometry=CArmGeometry(1000.0, ds.Rows, ds.Columns, (0.1, 0.1)))
        np.testing.assert_allclose(xray.image.numpy(), (4095.0 - ds.pixel_array) * slope + intercept, rtol=1e-6)
        assert (xray.metadata["rescale_slope"], xray.metadata["rescale_intercept"]) == (slope, intercept)
        assert xray.field_mask is None and xray.metadata["polarity_applied"] == "bone-bright"


def test_real_cr_compressed_reads_like_uncompressed() -> None:
    """pydicom-data RG3 (CR, 10 bits, MONOCHROME1): JPEG 2000 lossless reads as the raw file does."""
    data_store = pytest.importorskip("data_store")
    folder = Path(data_store.__file__).parent / "data"
    if not (folder / "RG3_UNCR.dcm").is_file() or not (folder / "RG3_J2KR.dcm").is_file():
        pytest.skip("pydicom-data RG3 files absent")
    geometry = CArmGeometry(1000.0, 1760, 1760, (0.17, 0.17))
    raw = read_xray(folder / "RG3_UNCR.dcm", geometry=geometry, working_shape=(440, 440))
    j2k = read_xray(folder / "RG3_J2KR.dcm", geometry=geometry, working_shape=(440, 440))
    assert torch.equal(raw.image, j2k.image) and raw.metadata["photometric_interpretation"] == "MONOCHROME1"
    stored = pydicom.dcmread(folder / "RG3_UNCR.dcm").pixel_array.astype(np.float64)
    expected = (1023.0 - stored).reshape(440, 4, 440, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(raw.image.numpy(), expected, rtol=1e-5)


def test_multi_frame_non_xray_is_refused_for_its_modality() -> None:
    """pydicom-data's emri_small (MR, 10 frames): named as an MR, not asked for a frame."""
    data_store = pytest.importorskip("data_store")
    path = Path(data_store.__file__).parent / "data" / "emri_small.dcm"
    if not path.is_file():
        pytest.skip("pydicom-data emri_small absent")
    for frame in (None, 0):
        with pytest.raises(InputError, match=r"emri_small\.dcm: DICOM Modality MR"):
            read_xray(path, frame=frame)
