"""Every pass of a registration, for chosen benchmark cases: its confidence, similarity and mTRE.

``register`` runs a second, wider pass (and a third from the start) when a result is flagged, then
keeps one (``sopi.registration.api.run_passes``). The passes do not depend on that choice, so this
record lets any choosing rule be replayed exactly. Cases are simulated as ``sopi benchmark
--realistic`` does (same protocol, seed and case numbers); the method is ``global+opt``.

    python benchmarks/pass_outcomes.py CT MASK --protocol wide --seed 0 --cases 2,5 [--clean]

Prints one JSON line per case: the final mTRE, success (the paper's 3 deg / 3 mm), confidence, flag and time, and
``[label, confidence, similarity, mTRE]`` per pass (the label: the pass's note). ``--refined-as-kept on`` refines a
flagged first result with the instruments masked as from a kept start (a depth scan and a short CMA-ES) instead of by
``opt``'s wide CMA-ES (``sopi.registration.passes.REFINE_AS_KEPT_START``, off by default); ``--cases all``: every case
of 10.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SOPIRegistration"))

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sopi.registration.api as api  # noqa: E402
import sopi.registration.passes as passes  # noqa: E402
from benchmark_cases import simulated  # noqa: E402
from sopi.benchmark import case_metrics  # noqa: E402
from sopi.io_xray import XRay  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ct")
    parser.add_argument("mask")
    parser.add_argument("--protocol", default="paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", required=True, help="comma-separated case numbers (of 10)")
    parser.add_argument("--clean", action="store_true", help="clean DRRs instead of realistic X-rays")
    parser.add_argument("--refined-as-kept", choices=("on", "off"), default="off", help="REFINE_AS_KEPT_START")
    args = parser.parse_args()
    passes.REFINE_AS_KEPT_START = args.refined_as_kept == "on"
    cases = simulated(args.ct, args.mask, args.protocol, 10, args.seed, not args.clean)
    ct, spine, geometry, nominal, points, thetas, images = (cases.ct, cases.spine, cases.geometry, cases.nominal, cases.points,
                                                            cases.thetas, cases.images)
    captured = []
    chooser = api.run_passes

    def recording(run, stages, *args, **kwargs):
        def wrapped(chosen, note, *args, **kwargs):
            one = run(chosen, note, *args, **kwargs)
            captured.append((note, one))
            return one

        return chooser(wrapped, stages, *args, **kwargs)

    api.run_passes = recording
    for index in range(10) if args.cases == "all" else (int(value) for value in args.cases.split(",")):
        captured.clear()
        truth = nominal.pose(thetas[index])
        result = api.register(ct, XRay(images[index], geometry), initial_pose=nominal.camera_from_world, mask=spine,
                              method="global+opt", device="cpu", seed=args.seed + index)
        every = []
        for note, one in captured:
            pose = one.problem.pose(one.theta)
            every.append([note.rstrip(": ") or "first", round(one.assessment.confidence, 3), round(one.similarity, 3),
                          round(case_metrics(pose, truth, nominal, geometry, points).mtre_mm, 1)])
        final = case_metrics(result.camera_from_world.to(torch.float64), truth, nominal, geometry, points)
        print(json.dumps({"protocol": args.protocol, "seed": args.seed, "case": index, "final_mtre_mm": round(final.mtre_mm, 2),
                          "success": not final.failed, "confidence": round(result.confidence, 3), "likely_failed": result.likely_failed,
                          "time_s": round(result.time_s, 1), "renders": sum(record.get("renders", 0) for record in result.stages),
                          "passes": every}), flush=True)


if __name__ == "__main__":
    main()
