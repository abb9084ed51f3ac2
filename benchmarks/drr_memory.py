"""Peak memory of the projector on a 512^3 volume and a 1024^2 detector.

Each case runs in a fresh subprocess and reports its peak resident memory
(``ru_maxrss``) next to the size of the volume and of one image, so the number
shows what chunking (and checkpointing in the backward pass) keeps bounded:
all sample positions at once would need rays x samples x 12 bytes.

    .venv/bin/python benchmarks/drr_memory.py [--size 512] [--detector 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_case(size: int, detector: int, backward: bool) -> dict:
    import torch

    from sopi.drr import Projector
    from sopi.geometry import CArmGeometry, nominal_view
    from sopi.volume import Volume

    generator = torch.Generator().manual_seed(0)
    data = torch.rand(size, size, size, generator=generator) * 0.03  # attenuation-like values, 1/mm
    world_from_index = torch.eye(4, dtype=torch.float64)  # 1 mm voxels
    volume = Volume(data, world_from_index)
    geometry = CArmGeometry.preset("perlove-plx118f-full").resized(detector, detector)
    nominal = nominal_view("ap", volume.center_world, geometry.source_to_isocenter_mm)
    projector = Projector(volume, geometry, step_mm=1.0)
    theta = torch.zeros(1, 6, dtype=torch.float64, requires_grad=backward)
    start = time.perf_counter()
    if backward:
        projector(nominal.pose(theta)).sum().backward()
    else:
        with torch.no_grad():
            projector(nominal.pose(theta))
    seconds = time.perf_counter() - start
    origin, direction = projector._rays_normalized(nominal.pose(theta.detach()).float())
    near, far = projector._clip(origin, direction)
    samples = int(((far - near) * projector.ray_length_mm).max().ceil()) * detector * detector
    return {
        "size": size,
        "detector": detector,
        "backward": backward,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "volume_mb": round(data.numel() * 4 / 2**20),
        "all_samples_positions_mb": round(samples * 12 / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--detector", type=int, default=1024)
    parser.add_argument("--case", choices=("forward", "backward"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.size, args.detector, args.case == "backward")))
        return
    print("| case | volume | detector | time (s) | peak RSS (MB) | volume (MB) | all sample positions at once (MB) |")
    print("|---|---|---|---|---|---|---|")
    for case in ("forward", "backward"):
        output = subprocess.run(
            [sys.executable, __file__, "--size", str(args.size), "--detector", str(args.detector), "--case", case],
            capture_output=True, text=True, check=True,
        ).stdout
        row = json.loads(output.strip().splitlines()[-1])
        label = "forward + backward (pose)" if row["backward"] else "forward"
        print(
            f"| {label} | {row['size']}^3 | {row['detector']}^2 | {row['seconds']} | {row['peak_rss_mb']} | "
            f"{row['volume_mb']} | {row['all_samples_positions_mb']} |"
        )


if __name__ == "__main__":
    main()
