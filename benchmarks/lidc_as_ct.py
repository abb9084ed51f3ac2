"""Write the shared LIDC chest volume as an approximate CT in HU with an LPS orientation.

``../shared/data/lidc_chest_vtkjs/lidc2_uint8.nii.gz`` is display-windowed uint8 without
orientation (its README). From its histogram the window is close to a mediastinal one
(level 40 HU, width 400 HU: fat near 30, soft tissue near 128, bone saturated at 255), so
``HU = value / 255 * 400 - 160``; bone above 240 HU is clipped there, so the volume has less
bone contrast than a real CT. Orientation, read from the images: +i towards the patient's
left (the heart), +j anterior (the table and the spine at small j), +k inferior (the aortic
arch at small k); in LPS that is the direction matrix diag(1, -1, -1).

With a second argument it also writes a rough spine mask for benchmarks (the automatic
segmentation does not find the column in this windowed volume): voxels at or above 200 HU
in the box around the column read from the images (i 105-150, j 20-80, every slice).

Usage: python benchmarks/lidc_as_ct.py OUT.nii.gz [SPINE_MASK.nii.gz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc_chest_vtkjs" / "lidc2_uint8.nii.gz"


def main(out: str, mask_out: str | None = None) -> None:
    image = sitk.Cast(sitk.ReadImage(str(SOURCE)), sitk.sitkFloat32)
    hu = sitk.Cast(image * (400.0 / 255.0) - 160.0, sitk.sitkInt16)
    hu.CopyInformation(image)
    hu.SetDirection((1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0))
    sitk.WriteImage(hu, out, True)
    print(f"wrote {out}")
    if mask_out:
        values = sitk.GetArrayFromImage(hu)  # (k, j, i)
        mask = np.zeros(values.shape, np.uint8)
        box = (slice(None), slice(20, 80), slice(105, 150))
        mask[box] = values[box] >= 200
        written = sitk.GetImageFromArray(mask)
        written.CopyInformation(hu)
        sitk.WriteImage(written, mask_out, True)
        print(f"wrote {mask_out} ({int(mask.sum())} voxels)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the CT in HU (.nii.gz)")
    parser.add_argument("mask_out", nargs="?", help="a rough spine mask for benchmarks (.nii.gz)")
    args = parser.parse_args()
    main(args.out, args.mask_out)
