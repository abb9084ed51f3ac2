"""Where the final refinement's optimum lies on realistic X-rays, started at the true pose.

A single view sees depth (along the principal ray) only as a scale change: 1 mm at the
isocentre is 0.15 % of the image. So any difference between the X-ray and the DRR that moves
edges by a fraction of a pixel moves the similarity's optimum by millimetres in depth. This
script measures that bias, and which physical effect causes it.

For each case of ``sopi benchmark --realistic`` (same protocol, cases and seed, so the same
poses and physics draws) and each *variant* of its physics draw (one effect removed), it
simulates the X-ray at the true pose, prepares it as ``register`` does (polarity, masks),
adapts the problem to it (scatter level, unexplained edges) and runs ``opt``'s final stage
(Adam on gradient correlation) from the true pose. The optimiser never sees the truth
otherwise, so where it stops is where the objective's optimum lies.

Variants (joined with ``+`` to remove several): ``full`` (the draw as is), ``noscatter``,
``nonoise``, ``noblur``, ``novendor`` (no gamma, unsharp masking or saturation), ``noinstr``
(no instruments), ``nofield`` (no collimator blades or circular field), ``mono`` (one material,
no beam hardening), ``onematerial`` and ``nohardening`` (each half of ``mono``) and ``clean`` (a plain DRR).

    python benchmarks/depth_bias.py CT MASK --variants full,mono,nofield --out bias.json
    python benchmarks/depth_bias.py CT MASK --factor 1 --out bias_full_resolution.json
    python benchmarks/depth_bias.py CT MASK --variants full --profile-mm 10 --out profiles.json
    python benchmarks/depth_bias.py CT MASK --variants full --true-field --out bias_true_field.json

The quantum noise of a variant is drawn from ``seed + 100 + case``, not the benchmark's stream.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SOPIRegistration"))

from sopi.benchmark import case_metrics, simulate_cases, target_points  # noqa: E402
from sopi.drr import Projector  # noqa: E402
from sopi.geometry import CArmGeometry, nominal_view  # noqa: E402
from sopi.io import read_ct, read_mask  # noqa: E402
from sopi.io_xray import XRay  # noqa: E402
from sopi.registration.api import _run_stage  # noqa: E402
from sopi.registration.methods import Stage, get_method  # noqa: E402
from sopi.registration.optimizers import Monitor  # noqa: E402
from sopi.registration.preparation import prepare_fixed  # noqa: E402
import sopi.registration.problem as problem_module  # noqa: E402
from sopi.registration.problem import PoseProblem, exposed_field  # noqa: E402
from sopi.render import rendering_volume  # noqa: E402
from sopi.segment import mask_centroid_world  # noqa: E402
from sopi.xray_physics import Instrument, RealismDraw, field_masks, material_volume, simulate_xray  # noqa: E402

_REMOVALS = {
    "full": {},
    "noscatter": {"scatter_to_primary": 0.0},
    "nonoise": {"photons": 0.0},
    "noblur": {"blur_px": 0.0},
    "novendor": {"gamma": 1.0, "unsharp_amount": 0.0, "saturation": 0.0},
    "noinstr": {"instruments": []},
    "nofield": {"blades": (0.0, 0.0, 0.0, 0.0), "fov_radius": 0.0},
    "mono": {"soft_weight": 1.0, "bone_weight": 1.0, "hardening": 0.0},
    "onematerial": {"soft_weight": 1.0, "bone_weight": 1.0},
    "nohardening": {"hardening": 0.0},
}


def variant(draw: dict, name: str) -> RealismDraw:
    """The case's physics draw with the effects ``name`` names removed (``a+b`` removes both)."""
    if name == "clean":
        return RealismDraw()
    fields = {**draw, "instruments": [Instrument(**item) for item in draw["instruments"]]}
    for part in name.split("+"):
        if part not in _REMOVALS:
            raise SystemExit(f"unknown variant {part!r}; expected clean or {', '.join(_REMOVALS)}")
        fields.update(_REMOVALS[part])
    return RealismDraw(**fields)


def true_field(draw: RealismDraw, shape: tuple[int, int], erode_px: int = 2) -> torch.Tensor:
    """``(rows, cols)`` 0/1 weight: where the simulated beam reached the detector, ``erode_px`` inside the blades'
    and the circular field's edges (their blur)."""
    open_field, inside = field_masks(draw, shape)
    field = (open_field & inside).to(torch.float32)[None, None]
    return (-torch.nn.functional.max_pool2d(-field, 2 * erode_px + 1, stride=1, padding=erode_px))[0, 0]


def depth_profiles(problem: PoseProblem, stage: Stage, reach_mm: float) -> dict:
    """The stage's similarity at depths ``-reach..reach`` mm (1 mm apart) from the truth, the rest of the
    pose true, minus its value at the truth: with each pose's own spine region, and with the truth's."""
    depths = torch.arange(-reach_mm, reach_mm + 0.5, 1.0, dtype=torch.float64)
    theta = torch.zeros(len(depths), 6, dtype=torch.float64)
    theta[:, 5] = depths  # translation along the principal ray
    factor = stage.level_factor(max(problem.geometry.rows, problem.geometry.cols))
    found = {}
    for name, held in (("profile_own_region", None), ("profile_held_region", torch.zeros(6, dtype=torch.float64))):
        problem.hold_region(held)
        with torch.no_grad():
            scores = problem.similarity(theta, factor, stage.measure)
        problem.hold_region(None)
        centre = float(scores[len(depths) // 2])
        found[name] = [round(float(value) - centre, 5) for value in scores]
        found[name.replace("profile", "best_depth_mm")] = float(depths[int(scores.argmax())])
        # roughness: the largest second difference, against a smooth peak's curvature (per mm^2)
        found[name.replace("profile", "roughness")] = round(float((scores[2:] - 2 * scores[1:-1] + scores[:-2]).abs().max()), 5)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ct")
    parser.add_argument("mask")
    parser.add_argument("--protocol", default="paper")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="full,noscatter,nonoise,noblur,novendor,noinstr,nofield,mono")
    parser.add_argument("--factor", type=int, default=None, help="detector downsampling of the final stage (default: opt's)")
    parser.add_argument("--measure", default=None, help="similarity of the final stage (default: opt's)")
    parser.add_argument("--scatter-from-field", action="store_true", help="scatter from the exposed field only (SCATTER_FROM_EXPOSED_FIELD)")
    parser.add_argument("--fit-bone-contrast", action="store_true", help="fit the bone contrast before the last stage (PoseProblem.FIT_BONE_CONTRAST)")
    parser.add_argument("--true-field", action="store_true",
                        help="weight the X-ray by the simulator's own field (blades and circular field, eroded 2 px) instead of the "
                             "masks the preparation finds: does finding the field limit depth?")
    parser.add_argument("--hold-region", action="store_true", help="the final stage holds the spine region at its start (Stage.hold_region)")
    parser.add_argument("--profile-mm", type=float, default=0.0,
                        help="also record the final stage's similarity along depth through the truth, 1 mm apart to +-this, "
                             "with the spine region of every pose and with the truth's (PoseProblem.hold_region)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    problem_module.SCATTER_FROM_EXPOSED_FIELD = args.scatter_from_field
    problem_module.PoseProblem.FIT_BONE_CONTRAST = args.fit_bone_contrast
    ct = read_ct(args.ct)
    spine = read_mask(args.mask, ct)
    spine = spine.with_data((spine.data != 0).to(torch.uint8))
    geometry = CArmGeometry.preset("perlove-plx118f")
    pivot = mask_centroid_world(spine)
    nominal = nominal_view("ap", pivot, geometry.source_to_isocenter_mm)
    points = target_points(spine)
    thetas, _, draws = simulate_cases(ct, nominal, geometry, args.protocol, args.cases, args.seed, True, "cpu", spine=spine)
    materials = Projector(material_volume(ct), geometry)
    attenuation = rendering_volume(ct, "hu")
    first, final = get_method("opt")[0], get_method("opt")[-1]
    final = dataclasses.replace(final, factor=args.factor or final.factor, measure=args.measure or final.measure,
                                hold_region=args.hold_region or final.hold_region)
    adapt_factor = first.level_factor(max(geometry.rows, geometry.cols))
    names = args.variants.split(",")
    rows = []
    for index, theta in enumerate(thetas):
        truth = nominal.pose(theta).to(torch.float64)
        for name in names:
            draw = variant(draws[index], name)
            image = simulate_xray(materials, geometry, truth, draw, torch.Generator().manual_seed(args.seed + 100 + index))
            fixed, weight, _ = prepare_fixed(XRay(image, geometry), attenuation, truth, torch.device("cpu"))
            if args.true_field:
                weight = true_field(draw, tuple(image.shape[-2:]))
            problem = PoseProblem(attenuation, fixed.image, geometry, truth, pivot, mask=spine, xray_weight=weight, exposed=exposed_field(fixed))
            zero = torch.zeros(6, dtype=torch.float64)
            problem.adapt_to_xray(zero, adapt_factor, first.measure)  # as register does before opt's second stage
            if args.fit_bone_contrast:  # as register does before the last stage when switched on
                problem.estimate_bone_contrast(zero, final.level_factor(max(geometry.rows, geometry.cols)), final.measure)
            profiles = depth_profiles(problem, final, args.profile_mm) if args.profile_mm > 0 else {}
            outcome = _run_stage(problem, final, zero, args.seed, Monitor(None, None, 0.0, 1.0, ""))
            estimate = problem.pose(outcome.theta)
            metrics = case_metrics(estimate, truth, nominal, geometry, points)
            # how far the pivot moved, in the true camera's frame (z: along the principal ray)
            pivot_camera = truth[:3, :3] @ pivot + truth[:3, 3]
            moved = estimate[:3, :3] @ pivot + estimate[:3, 3] - pivot_camera
            row = {"case": index, "variant": name, "depth_error_mm": round(float(moved[2]), 3),
                   "in_plane_error_mm": round(float(moved[:2].norm()), 3), "mtre_mm": round(metrics.mtre_mm, 3),
                   "success": not metrics.failed, **profiles}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {name: {"median_abs_depth_error_mm": round(statistics.median(abs(r["depth_error_mm"]) for r in rows if r["variant"] == name), 3),
                      "success": sum(r["success"] for r in rows if r["variant"] == name), "cases": len(thetas)} for name in names}
    if args.profile_mm > 0:
        for name in names:
            for key in ("roughness_own_region", "roughness_held_region"):
                summary[name][f"median_{key}"] = round(statistics.median(r[key] for r in rows if r["variant"] == name), 5)
    args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "summary": summary, "rows": rows}, indent=1))
    for name, values in summary.items():
        rough = (f"; roughness along depth {values['median_roughness_own_region']:.4f} (own region), "
                 f"{values['median_roughness_held_region']:.4f} (held)") if args.profile_mm > 0 else ""
        print(f"{name:>12}: median |depth error| {values['median_abs_depth_error_mm']:.2f} mm, success {values['success']}/{values['cases']}{rough}")


if __name__ == "__main__":
    main()
