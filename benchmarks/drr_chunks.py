#!/usr/bin/env python3
"""Time per DRR against the projector's ray chunk (``Projector.max_samples_per_chunk``), on the CPU.

A render samples every plane of every ray in chunks of rays: the chunk's sample grid ``(planes, rays, 2)`` is
built, read by one ``grid_sample`` into ``(planes, C, rays)`` and summed over the planes. Large chunks spill those
temporaries out of the core's cache; small ones call ``grid_sample`` more often. For each CT given, renders the
registration's detector levels (the ``perlove-plx118f`` detector binned to 64 and 128 pixels, at the ray steps the
levels use: 3 and 2 mm), a batch of paper-protocol poses about the nominal AP view, forward only and forward with the
pose gradient of a sum (Adam's stage), at each chunk size; the sizes are interleaved round-robin so background load
hits them alike, and the median of the repeats is printed with the largest difference from the first size's image.

    .venv/bin/python benchmarks/drr_chunks.py CT [CT ...] [--chunks 20,17,16,15] [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SOPIRegistration"))

from sopi.drr import Projector  # noqa: E402
from sopi.geometry import CArmGeometry, nominal_view  # noqa: E402
from sopi.io import read_ct  # noqa: E402
from sopi.protocols import get_protocol  # noqa: E402
from sopi.render import binned_volume, rendering_volume, working_factors  # noqa: E402

LEVELS = ((64, 3.0, 16), (128, 2.0, 8))  # detector pixels, ray step (mm), poses per batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cts", nargs="+", help="CT files (HU)")
    parser.add_argument("--chunks", default="20,18,17,16,15", help="log2 of the samples per chunk, the first the reference")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chunks = [1 << int(value) for value in args.chunks.split(",")]
    geometry = CArmGeometry.preset("perlove-plx118f")
    thetas = get_protocol("paper").sample(16, torch.Generator().manual_seed(0))
    print(f"threads {args.threads}, repeats {args.repeats}, torch {torch.__version__}")
    print("| CT | detector | pass | " + " | ".join(f"2^{c.bit_length() - 1}" for c in chunks) + " | largest difference |")
    print("|---|---|---|" + "---|" * (len(chunks) + 1))
    for path in args.cts:
        ct = read_ct(path)
        volume = binned_volume(rendering_volume(ct, "hu"), working_factors(ct), "mean")
        view = nominal_view("ap", volume.center_world, geometry.source_to_isocenter_mm)
        for pixels, step_mm, batch in LEVELS:
            base = Projector(volume, geometry.resized(pixels, pixels), step_mm=step_mm)
            projectors = []
            for chunk in chunks:
                projector = base.on_detector(base.geometry)
                projector.max_samples_per_chunk = chunk
                projectors.append(projector)
            for gradient in (False, True):
                timings: list[list[float]] = [[] for _ in chunks]
                images: list[torch.Tensor | None] = [None] * len(chunks)
                for repeat in range(args.repeats + 1):  # the first round warms the plane cache
                    for index, projector in enumerate(projectors):
                        theta = thetas[:batch].clone().requires_grad_(gradient)
                        started = time.perf_counter()
                        with torch.set_grad_enabled(gradient):
                            image = projector(view.pose(theta))
                            if gradient:
                                image.sum().backward()
                        if repeat:
                            timings[index].append((time.perf_counter() - started) / batch)
                        images[index] = image.detach()
                difference = max(float((image - images[0]).abs().max()) for image in images)
                cells = " | ".join(f"{1000 * statistics.median(one):.2f}" for one in timings)
                print(f"| {Path(path).name} | {pixels} px, {step_mm:g} mm | {'forward + gradient' if gradient else 'forward'} | {cells} | {difference:.2g} |",
                      flush=True)
    print("(ms per DRR, median of the repeats)")


if __name__ == "__main__":
    main()
