"""What the global stage sees, case by case (docs/benchmarks.md, "A faster global search").

``start``: the refined start's confidence and its mTRE (what ``GlobalStage.accept_start_above``
is compared with), per case of a protocol, with the confidence's cues (similarity and peak drop, so
that other models can be replayed) and the similarity at the true pose. ``hits``: with the refinements switched off, the
mTRE of each of the search's hypotheses (the start first, then by FFT score) for each of the
search's FFT scores (``GlobalStage.fft_score``: the per-channel masked NCC and the joint score).

    python benchmarks/global_search_diagnostics.py start CT MASK --protocol far [--realistic] --cases 10 --out start.json
    python benchmarks/global_search_diagnostics.py hits CT MASK --protocol wide --realistic --cases 10 --out hits.json

Cases, X-rays and the prepared problem are the benchmark's (``sopi benchmark`` with the same
protocol, seed and realism; the register seed of case i is ``seed + i``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

import sopi.registration.global_search as search_module
from sopi.benchmark import case_metrics
from sopi.io_xray import XRay
from sopi.registration.confidence import assess
from sopi.registration.global_search import GlobalStage, global_search, judge_start
from sopi.registration.optimizers import Monitor, OptimizerResult
from sopi.registration.preparation import prepare_fixed
from sopi.registration.problem import PoseProblem, exposed_field
from sopi.render import rendering_volume
from sopi.segment import mask_centroid_world

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_cases import simulated  # noqa: E402

SCORES = ("masked-ncc", "joint-gradient")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["start", "hits"])
    parser.add_argument("ct", type=Path)
    parser.add_argument("mask", type=Path)
    parser.add_argument("--protocol", default="far")
    parser.add_argument("--realistic", action="store_true")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hypotheses", type=int, default=12, help="hits: hypotheses kept besides the start")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    cases = simulated(args.ct, args.mask, args.protocol, args.cases, args.seed, args.realistic)
    ct, spine, geometry, nominal, points, thetas, images = (cases.ct, cases.spine, cases.geometry, cases.nominal, cases.points,
                                                            cases.thetas, cases.images)
    attenuation = rendering_volume(ct, "hu")
    binary = spine.with_data((spine.data != 0).to(torch.uint8))
    rows = []
    for index, theta in enumerate(thetas):
        fixed, weight, _ = prepare_fixed(XRay(images[index], geometry), attenuation, nominal.camera_from_world, torch.device("cpu"))
        problem = PoseProblem(attenuation, fixed.image, geometry, nominal.camera_from_world, mask_centroid_world(binary),
                              mask=binary, xray_weight=weight, exposed=exposed_field(fixed))
        truth = nominal.pose(theta)

        def mtre(found: torch.Tensor) -> float:
            return round(case_metrics(problem.pose(found), truth, nominal, geometry, points).mtre_mm, 2)

        row = {"case": index}
        if args.mode == "start":
            refined, judged = judge_start(problem, GlobalStage(), args.seed + index)  # its cues let other models be replayed
            row.update(confidence=round(judged.confidence, 4), mtre_mm=mtre(refined.theta), similarity=round(judged.similarity, 5),
                       drop=round(judged.drop, 5), truth_similarity=round(assess(problem, problem.reference.params(truth)).similarity, 5))
        else:
            original = search_module.cma_es
            search_module.cma_es = lambda loss, start, *rest, **options: OptimizerResult(start, 0.0, 1, 1, True)
            try:
                for name in SCORES:
                    stage = replace(GlobalStage(), accept_start_above=None, hypotheses=args.hypotheses, fft_score=name)
                    outcome = global_search(problem, stage, Monitor(None, None), args.seed + index)
                    row[name] = [mtre(found) for found, _ in outcome.hypotheses]  # equal losses: the search's order stays
            finally:
                search_module.cma_es = original
        rows.append(row)
        print(row, flush=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
