"""Time of one RTPI prediction (network inputs + forward pass) against one ``opt`` registration.

For a model and its CT, per case: resampling the CT cube, resizing and standardising the
X-ray, and the forward pass (:func:`sopi.nets.predict.rtpi_theta`), timed separately from
``register(method="rtpi")`` end to end (which adds reading nothing, building the
render-and-compare problem and scoring the pose) and from ``register(method="opt")`` on
the same cases, in the same process.

Usage::

    .venv/bin/python benchmarks/rtpi_speed.py --model SOPIRegistration/Resources/Models/rtpi_sample_ct.pt \
        [--cases 20] [--threads 2] [--device cpu]

Prints a Markdown table of median and mean seconds per case.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from sopi.geometry import CArmGeometry, nominal_view
from sopi.io_xray import XRay
from sopi.nets.model_file import load_model
from sopi.nets.predict import rtpi_theta
from sopi.protocols import get_protocol
from sopi.registration import register
from sopi.render import render_drr, rendering_volume
from sopi.sample_data import load_sample
from sopi.segment import mask_centroid_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-opt", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model(args.model, device=device)
    geometry = CArmGeometry.preset("perlove-plx118f")
    ct, labels = load_sample()
    spine = labels.with_data((labels.data != 0).to(torch.uint8))
    view = nominal_view("ap", mask_centroid_world(spine), geometry.source_to_isocenter_mm)
    attenuation = rendering_volume(ct, "hu")
    thetas = get_protocol("wide").sample(args.cases, torch.Generator().manual_seed(0))
    images = [render_drr(attenuation, geometry, view.pose(theta)) for theta in thetas]
    timings: dict[str, list[float]] = {"rtpi network (inputs + forward)": [], "register rtpi (end to end)": []}
    if not args.skip_opt:
        timings["register opt (end to end)"] = []
    rtpi_theta(model, attenuation, spine, view, images[0])  # warm-up
    for image in images:
        started = time.perf_counter()
        rtpi_theta(model, attenuation, spine, view, image)
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings["rtpi network (inputs + forward)"].append(time.perf_counter() - started)
        for method in ("rtpi", "opt")[: 1 if args.skip_opt else 2]:
            started = time.perf_counter()
            register(ct, XRay(image, geometry), initial_pose=view.camera_from_world, mask=spine, method=method, model=model, device=device)
            timings[f"register {method} (end to end)"].append(time.perf_counter() - started)
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, device {device}, {args.cases} cases, torch {torch.__version__}\n")
    print("| step | median (s) | mean (s) |\n|---|---|---|")
    for name, values in timings.items():
        print(f"| {name} | {statistics.median(values):.3f} | {statistics.fmean(values):.3f} |")


if __name__ == "__main__":
    main()
