"""Does the similarity's shape along depth tell a depth near miss from a success?

For each ``global+opt`` case of a realistic (or, with ``--clean``, clean) ``sopi benchmark`` folder, the X-ray is simulated again
(same protocol, cases and seed, so the same image), prepared as ``register`` prepares it, and the
gradient correlation that the confidence reads (half resolution, spine-weighted) is sampled at the
registered pose moved along depth (the ray through the pivot) by -8 to +8 mm. The cues then are:
the drop over +-5 and +-8 mm, the curvature of a parabola through -5..+5 mm (raw, and divided by
``1 - similarity`` as a noise scale), and where that parabola peaks. Each cue's AUROC for success
(3 deg / 3 mm) is printed beside the confidence's, so a cue worth adding to the confidence shows up
as a higher AUROC.

``--measure NAME@FACTOR`` (repeatable) also samples other similarities (``sopi.similarity.SIMILARITIES``
at detector level ``FACTOR``) along the same line, -12 to +12 mm in 1.5 mm steps, and reports where each
one peaks (parabola through its best sample): how far from the result (as a cue) and from the true depth
(would moving there have fixed the depth?). This is how the depth scan of ``opt``
(``sopi.registration.methods.DEPTH_SCAN``) was chosen.

    python benchmarks/depth_cues.py CT MASK BENCHMARK_FOLDER/<ct> --protocol paper --seed 0 --out cues.json \
        [--measure gc@2 --measure gradient-ncc@2 ...]
    python benchmarks/depth_cues.py --summarise cues_*.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SOPIRegistration"))

from sopi.geometry import CArmGeometry, nominal_view  # noqa: E402
from sopi.io import read_ct, read_mask  # noqa: E402
from sopi.io_xray import XRay  # noqa: E402
from sopi.registration.preparation import prepare_fixed  # noqa: E402
from sopi.registration.problem import PoseProblem, exposed_field  # noqa: E402
from sopi.render import rendering_volume  # noqa: E402
from sopi.report import auroc  # noqa: E402
from sopi.segment import mask_centroid_world  # noqa: E402
from sopi.simulate import simulate_cases  # noqa: E402

OFFSETS_MM = (-8.0, -5.0, -3.0, -1.5, 0.0, 1.5, 3.0, 5.0, 8.0)
SCAN_MM = tuple(float(value) for value in np.arange(-12.0, 12.01, 1.5))  # the --measure profiles
PARAMS = ("rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm")


def profiles(
    ct_path: str, mask_path: str, folder: Path, protocol: str, seed: int, cases: int, measures: tuple[str, ...] = (),
    realistic: bool = True,
) -> list[dict]:
    """The similarity along depth at every ``global+opt`` result of ``folder`` (its ``results.csv``), and
    each of ``measures`` (``NAME@FACTOR``) along :data:`SCAN_MM`."""
    parsed = {text: parse_measure(text) for text in measures}  # a bad one fails before the simulation
    ct = read_ct(ct_path)
    spine = read_mask(mask_path, ct)
    spine = spine.with_data((spine.data != 0).to(torch.uint8))
    geometry = CArmGeometry.preset("perlove-plx118f")
    pivot = mask_centroid_world(spine)
    nominal = nominal_view("ap", pivot, geometry.source_to_isocenter_mm)
    _, images, _ = simulate_cases(ct, nominal, geometry, protocol, cases, seed, realistic, "cpu", spine=spine)
    attenuation = rendering_volume(ct, "hu")
    start = nominal.pose(torch.zeros(6, dtype=torch.float64)).to(torch.float64)
    offsets = torch.tensor(OFFSETS_MM, dtype=torch.float64)
    rows = []
    with open(folder / "results.csv", encoding="utf-8") as handle:
        results = [row for row in csv.DictReader(handle) if row["method"] == "global+opt"]
    for row in results:
        theta = torch.tensor([float(row[f"est_{name}"]) for name in PARAMS], dtype=torch.float64)
        fixed, weight, _ = prepare_fixed(XRay(images[int(row["case"])], geometry), attenuation, start, torch.device("cpu"))
        problem = PoseProblem(attenuation, fixed.image, geometry, start, pivot, mask=spine, xray_weight=weight, exposed=exposed_field(fixed))
        problem.adapt_to_xray(theta, 4, "gradient-ncc")  # as register does before opt's second stage
        with torch.no_grad():
            direction = problem.depth_direction(theta)
            scores = problem.similarity(theta[None] + offsets[:, None] * direction[None], 2, "gc")
            scan = theta[None] + torch.tensor(SCAN_MM, dtype=torch.float64)[:, None] * direction[None]
            problem.hold_ct_edges(theta if problem.LEAVE_OUT_CT_EDGES else None)  # as register's stages do (the confidence does not)
            others = {name: [round(float(value), 6) for value in problem.similarity(scan, factor, measure)]
                      for name, (measure, factor) in parsed.items()}
        truth = torch.tensor([float(row[f"true_{name}"]) for name in PARAMS], dtype=torch.float64)
        rows.append({"folder": str(folder), "case": int(row["case"]), "success": row["failed"] != "True", "mtre_mm": float(row["mtre_mm"]),
                     "confidence": float(row["confidence"]), "profile": [round(float(value), 6) for value in scores],
                     "true_depth_mm": float((truth - theta) @ direction), "measures": others})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def parse_measure(text: str) -> tuple[str, int]:
    """``"NAME@FACTOR"`` -> ``(NAME, FACTOR)``; SystemExit naming what was expected otherwise."""
    from sopi.similarity import SIMILARITIES

    name, _, factor = text.partition("@")
    if name not in SIMILARITIES or not factor.isdigit() or int(factor) < 1:
        raise SystemExit(f"--measure {text!r}: expected NAME@FACTOR, NAME one of {', '.join(SIMILARITIES)} and FACTOR a level >= 1")
    return name, int(factor)


def cues(row: dict) -> dict[str, float]:
    """The depth cues of one profile (larger = more confident)."""
    offsets, scores = np.array(OFFSETS_MM), np.array(row["profile"])
    centre = scores[OFFSETS_MM.index(0.0)]
    inner = slice(1, len(OFFSETS_MM) - 1)  # -5 .. +5 mm
    a, b, _ = np.polyfit(offsets[inner], scores[inner], 2)
    return {
        "confidence": row["confidence"],
        "drop_5mm": centre - (scores[1] + scores[-2]) / 2,
        "drop_8mm": centre - (scores[0] + scores[-1]) / 2,
        "curvature": -a,
        "curvature_over_mismatch": -a / max(1e-6, 1.0 - centre),
        "peak_offset_mm (negated)": -abs(-b / (2 * a)) if a < 0 else -99.0,
    }


def scan_peak(scores: list[float]) -> float:
    """Where a :data:`SCAN_MM` profile peaks (mm): its best sample, moved to the vertex of the parabola through
    it and its neighbours where that is interior and curved downwards."""
    values, best = np.array(scores), int(np.argmax(scores))
    if 0 < best < len(values) - 1:
        below, centre, above = values[best - 1 : best + 2]
        curvature = below - 2 * centre + above
        if curvature < 0:
            return SCAN_MM[best] + 0.5 * (below - above) / curvature * (SCAN_MM[1] - SCAN_MM[0])
    return SCAN_MM[best]


def summarise(rows: list[dict]) -> str:
    """AUROC of each cue for success; for each ``--measure``, where its depth profile peaks."""
    values = [cues(row) for row in rows]
    labels = [row["success"] for row in rows]
    lines = [f"{len(rows)} results, {sum(labels)} succeed; AUROC for success:"]
    for name in values[0]:
        lines.append(f"  {name:>28}: {auroc([value[name] for value in values], labels):.3f}")
    measures = rows[0].get("measures", {})
    if measures:
        depth_now = np.array([abs(row["true_depth_mm"]) for row in rows])
        lines.append(f"depth error < 3 mm at the results: {int((depth_now < 3).sum())} of {len(rows)}; at each measure's peak:")
        for name in measures:
            peaks = np.array([scan_peak(row["measures"][name]) for row in rows])
            signed = peaks - np.array([row["true_depth_mm"] for row in rows])
            after = np.abs(signed)
            lines.append(
                f"  {name:>18}: {int((after < 3).sum())} (fixed {int(((depth_now >= 3) & (after < 3)).sum())}, "
                f"broken {int(((depth_now < 3) & (after >= 3)).sum())}), median |peak - true depth| {np.median(after):.2f} mm "
                f"(signed {np.median(signed):+.2f}), "
                f"AUROC of -|peak| {auroc(list(-np.abs(peaks)), labels):.3f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="CT MASK FOLDER, or the JSON files with --summarise")
    parser.add_argument("--protocol", default="paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=10, help="the benchmark's --cases (the draws depend on it)")
    parser.add_argument("--measure", action="append", default=[], metavar="NAME@FACTOR", help="also scan this similarity (e.g. gradient-ncc@2)")
    parser.add_argument("--clean", action="store_true", help="the benchmark ran on clean X-rays (no --realistic)")
    parser.add_argument("--summarise", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.summarise:
        rows = [row for name in args.inputs for row in json.loads(Path(name).read_text())]
        print(summarise(rows))
        return
    if len(args.inputs) != 3 or args.out is None:
        raise SystemExit("expected CT MASK FOLDER and --out (or --summarise FILES)")
    rows = profiles(*args.inputs[:2], Path(args.inputs[2]), args.protocol, args.seed, args.cases, tuple(args.measure), not args.clean)
    args.out.write_text(json.dumps(rows, indent=1))
    print(summarise(rows))


if __name__ == "__main__":
    main()
