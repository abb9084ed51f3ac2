"""A realistic simulated X-ray of the sample CT, what registration ignores in it, and the DRR
fused over it at the start and at the result.

Case ``CASE`` of ``sopi benchmark --realistic`` on the sample CT (seed 0) with ``PROTOCOL``,
registered with ``METHOD``; written to ``OUT``.
Usage: python scripts/make_realistic_figure.py [CASE [PROTOCOL METHOD OUT]]
  default: 1 paper opt docs/images/realistic_registration.png
  README's realistic figure: 1 paper global+opt docs/images/realistic_registration.png
  README's wide-start figure: 3 far global+opt docs/images/far_start_registration.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from sopi.benchmark import case_metrics, simulate_cases, target_points
from sopi.fusion import edge_overlay
from sopi.geometry import CArmGeometry, nominal_view
from sopi.io import read_ct, read_label_map
from sopi.io_xray import XRay
from sopi.registration import register
from sopi.render import render_drr, rendering_volume
from sopi.segment import mask_centroid_world
from sopi.xray_prep import prepare_xray

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "SOPIRegistration" / "Resources" / "SampleData"


def main(case: int = 1, protocol: str = "paper", method: str = "opt", out: str = "docs/images/realistic_registration.png") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ct = read_ct(SAMPLE / "sample_ct.nii.gz")
    spine = read_label_map(SAMPLE / "sample_ct_vertebrae.nii.gz", reference=ct)
    spine = spine.with_data((spine.data != 0).to(torch.uint8))
    geometry = CArmGeometry.preset("perlove-plx118f")
    nominal = nominal_view("ap", mask_centroid_world(spine), geometry.source_to_isocenter_mm)
    thetas, images, _ = simulate_cases(ct, nominal, geometry, protocol, case + 1, 0, realistic=True, spine=spine)
    image, truth = images[case], nominal.pose(thetas[case])
    result = register(ct, XRay(image, geometry), initial_pose=nominal.camera_from_world, mask=spine, method=method, seed=case)
    points = target_points(spine)
    start = case_metrics(nominal.camera_from_world, truth, nominal, geometry, points).mtre_mm
    end = case_metrics(result.camera_from_world, truth, nominal, geometry, points).mtre_mm
    prepared = prepare_xray(image)
    volume = rendering_volume(ct, "hu")
    panels = [
        ("realistic X-ray", np.stack([image.numpy()] * 3, -1), None),
        ("ignored: field (red), metal (blue)", None, prepared),
        (f"DRR edges at the start (mTRE {start:.1f} mm)", edge_overlay(image, render_drr(volume, geometry, nominal.camera_from_world)), None),
        (f"after {method} (mTRE {end:.2f} mm)", edge_overlay(image, render_drr(volume, geometry, result.camera_from_world)), None),
    ]
    figure, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    for axis, (title, picture, masks) in zip(axes, panels):
        if masks is not None:
            grey = (image - image.min()) / (image.max() - image.min())
            rgb = np.stack([grey.numpy()] * 3, -1)
            rgb[masks.outside_field.numpy() | masks.saturated.numpy()] = 0.6 * rgb[masks.outside_field.numpy() | masks.saturated.numpy()] + [0.4, 0, 0]
            rgb[masks.metal.numpy()] = 0.5 * rgb[masks.metal.numpy()] + [0, 0.2, 0.5]
            picture = rgb
        elif picture.dtype != np.uint8 and picture.max() > 1:
            picture = (picture - picture.min()) / (picture.max() - picture.min())
        axis.imshow(picture, cmap="gray")
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    out = REPO / out
    from sopi.atomic import atomic_path

    with atomic_path(out) as temporary:
        figure.savefig(temporary, dpi=80, format="png")
    print(f"wrote {out}: mTRE {start:.2f} -> {end:.2f} mm, {result.time_s:.1f} s, preparation {result.xray_preparation}")


if __name__ == "__main__":
    main(*(int(arg) if index == 0 else arg for index, arg in enumerate(sys.argv[1:5])))
