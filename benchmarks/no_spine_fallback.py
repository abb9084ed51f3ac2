"""Registration of a CT in which the segmentation finds no vertebral column (``mask_source`` "bone").

Simulates ``--cases`` clean X-rays of ``CT`` with the ``--protocol`` (poses about the centroid of
``--mask``, the reference spine mask that also gives the target points), then registers each as a
new user would: ``sopi.register(ct, xray)`` with no mask and no start pose, so the spine is
segmented, the segmentation falls back to every bone of the body, and the start is the nominal
AP view about that bone's centroid. Prints one JSON line per case (mTRE and projection distance
against the reference mask's targets, in mm; confidence; wall seconds).

    python benchmarks/no_spine_fallback.py lidc_hu.nii.gz --mask lidc_spine.nii.gz --protocol paper --cases 5
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from sopi.benchmark import case_metrics, simulate_cases, target_points
from sopi.geometry import CArmGeometry, nominal_view
from sopi.io import read_ct, read_mask
from sopi.io_xray import XRay
from sopi.registration import register
from sopi.segment import mask_centroid_world


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ct")
    parser.add_argument("--mask", required=True, help="reference spine mask (targets and simulated poses)")
    parser.add_argument("--protocol", default="paper")
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ct = read_ct(args.ct)
    spine = read_mask(args.mask, ct)
    spine = spine.with_data((spine.data != 0).to(torch.uint8))
    geometry = CArmGeometry.preset("perlove-plx118f")
    nominal = nominal_view("ap", mask_centroid_world(spine), geometry.source_to_isocenter_mm)
    points = target_points(spine)
    thetas, images, _ = simulate_cases(ct, nominal, geometry, args.protocol, args.cases, args.seed, spine=spine)
    for index in range(args.cases):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback's warning, once per case
            result = register(ct, XRay(images[index], geometry), seed=args.seed + index)
        metrics = case_metrics(result.camera_from_world, nominal.pose(thetas[index]), nominal, geometry, points)
        print(json.dumps({"case": index, "mask": result.mask_source, "mtre": round(metrics.mtre_mm, 2),
                          "proj": round(metrics.projection_distance_mm, 2), "conf": round(result.confidence, 3),
                          "s": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
