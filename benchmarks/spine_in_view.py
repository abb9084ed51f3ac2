"""How much of the spine a benchmark X-ray shows at its true pose, against the start (the confidence's
spine-in-view check, ``sopi.registration.confidence.MIN_SPINE_IN_VIEW``), and at the results of stored runs.

The spine's coverage is :meth:`PoseProblem.spine_coverage`'s: the fraction of the detector the dilated projected
spine mask covers. Printed per CT and protocol: the ratio of the true poses' coverage to the start's (minimum,
5th percentile, median); with ``--results DIR ...``, every stored result's ratio next to its mTRE, confidence
and flag (``results.csv`` of ``sopi benchmark``, the CT matched by the folder name or, with one CT, any).

    python benchmarks/spine_in_view.py CT MASK [CT MASK ...] --protocols paper,wide,far --seeds 0,1,2,3 --cases 40
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from benchmark_cases import Scene, scenes

from sopi.geometry import PARAM_NAMES  # noqa: E402
from sopi.registration.problem import PoseProblem  # noqa: E402
from sopi.render import rendering_volume  # noqa: E402
from sopi.simulate import case_poses  # noqa: E402


def coverage_ratios(problem: PoseProblem, thetas: torch.Tensor) -> list[float]:
    """Each theta's spine coverage over the start's (theta = 0), at the half-resolution level."""
    start = float(problem.spine_coverage(torch.zeros(1, 6, dtype=torch.float64), 2)[0])
    return [float(value) / start for batch in thetas.split(16) for value in problem.spine_coverage(batch, 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="+", help="CT MASK [CT MASK ...]")
    parser.add_argument("--protocols", default="paper,wide,far")
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--results", nargs="*", default=[], help="folders of sopi benchmark results to check")
    args = parser.parse_args()
    every = list(scenes(parser, args))
    for ct_path, scene in every:
        name = Path(ct_path).name.split(".")[0]
        problem = PoseProblem(rendering_volume(scene.ct, "hu"), torch.zeros(scene.geometry.shape), scene.geometry,
                              scene.nominal.camera_from_world, scene.nominal.isocenter_world, mask=scene.spine)
        ratios = []
        for protocol in args.protocols.split(","):
            values = sorted(value for seed in args.seeds.split(",") for value in coverage_ratios(problem, case_poses(scene.nominal, protocol, args.cases, int(seed), scene.spine)))
            ratios += values
            print(f"{name} {protocol}: true poses {len(values)}, ratio min {values[0]:.3f}, p5 {values[len(values) // 20]:.3f}, median {values[len(values) // 2]:.3f}")
        below = ", ".join(f"{sum(value < level for value in ratios)} under {level:g}" for level in (0.5, 0.55, 0.6, 0.65, 0.7))
        print(f"{name}: {len(ratios)} true poses, smallest ratio {min(ratios):.3f}; {below}")
        for folder in args.results:
            files = sorted(Path(folder).glob("**/results.csv"))
            files = [path for path in files if len(every) == 1 or name in str(path)]
            rows = [row for path in files for row in csv.DictReader(open(path)) if row["method"] != "Initial"]
            if not rows:
                continue
            estimates = torch.tensor([[float(row[f"est_{key}"]) for key in PARAM_NAMES] for row in rows], dtype=torch.float64)
            for row, ratio in zip(rows, coverage_ratios(problem, estimates)):
                print(f"  {folder} case {row['case']}: mTRE {float(row['mtre_mm']):.1f} mm, confidence {float(row['confidence']):.2f}, "
                      f"flagged {row['likely_failed']}, spine in view {ratio:.3f}")


if __name__ == "__main__":
    main()
