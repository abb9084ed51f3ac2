"""X-rays that show more of the patient than the CT: register against a CT cut short along its slices.

A pre-operative CT often covers only the levels of the surgery while the C-arm's field shows more, so
the DRR ends where the X-ray goes on. Each CT's X-rays are simulated from the whole CT (``sopi
simulate``'s cases: the protocol, the seed, ``--realistic``), and registered by ``sopi.register``
against the same CT (and mask) keeping only the slices within ``--half-mm`` of the spine's centre along
the body's long axis, from the nominal view about the whole spine's centre (as ``sopi benchmark`` starts).
mTRE is taken over the spine the short CT shows. ``--ct-edges-in`` keeps the pixels whose rays the CT's
extent cuts in the similarity (``PoseProblem.LEAVE_OUT_CT_EDGES = False``: registration before
2026-12-04). Writes ``results.csv`` and ``report.md`` per CT into ``--out``, like ``sopi benchmark``.

    python benchmarks/short_ct.py --ct CT --mask MASK [--ct CT2 --mask MASK2 ...] --half-mm 45 \\
        --protocol paper --realistic --cases 10 --seed 0 --out DIR [--ct-edges-in]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SOPIRegistration"))

from sopi.benchmark import initial_rows, result_row, target_points, write_results  # noqa: E402
from sopi.geometry import CArmGeometry, nominal_view  # noqa: E402
from sopi.io import read_ct, read_mask  # noqa: E402
from sopi.io_xray import XRay  # noqa: E402
from sopi.registration import register  # noqa: E402
from sopi.registration.problem import PoseProblem  # noqa: E402
from sopi.segment import mask_centroid_world  # noqa: E402
from sopi.simulate import simulate_cases  # noqa: E402
from sopi.volume import Volume  # noqa: E402


def shortened(volume: Volume, centre_world: torch.Tensor, half_mm: float) -> Volume:
    """``volume``'s slices across the body's long axis (the index axis closest to world z, LPS superior) whose
    centres lie within ``half_mm`` of ``centre_world``; same world frame."""
    axis = int(volume.direction[2].abs().argmax())  # 0 = i, 1 = j, 2 = k
    centre_index = float((volume.index_from_world @ torch.cat([centre_world.to(torch.float64), torch.ones(1, dtype=torch.float64)]))[axis])
    half = half_mm / float(volume.spacing[axis])
    count = volume.grid_shape[axis]
    low, high = max(0, round(centre_index - half)), min(count, round(centre_index + half) + 1)
    if high - low < 4:
        raise SystemExit(f"--half-mm {half_mm}: keeps {high - low} slices of {count}; expected at least 4")
    shift = torch.eye(4, dtype=torch.float64)
    shift[axis, 3] = low
    return Volume(volume.data.narrow(2 - axis, low, high - low).clone(), volume.world_from_index @ shift)


def run(ct_path: str, mask_path: str, args: argparse.Namespace) -> list[dict]:
    geometry = CArmGeometry.preset("perlove-plx118f")
    ct = read_ct(ct_path)
    spine = read_mask(mask_path, ct)
    centre = mask_centroid_world(spine)
    nominal = nominal_view("ap", centre, geometry.source_to_isocenter_mm)
    thetas, images, _ = simulate_cases(ct, nominal, geometry, args.protocol, args.cases, args.seed, args.realistic, "cpu", spine=spine)
    short_ct, short_spine = shortened(ct, centre, args.half_mm), shortened(spine, centre, args.half_mm)
    points = target_points(short_spine)
    print(f"{Path(ct_path).name}: {ct.grid_shape} voxels (i, j, k), registering against {short_ct.grid_shape}", flush=True)
    rows = initial_rows(thetas, nominal, geometry, points)
    for index, theta in enumerate(thetas):
        result = register(short_ct, XRay(images[index], geometry), initial_pose=nominal.camera_from_world, mask=short_spine,
                          method=args.method, device="cpu", seed=args.seed + index)
        rows.append(result_row(args.method, index, theta, result, nominal, geometry, points))
        print(f"  case {index}: mTRE {rows[-1]['mtre_mm']:.2f} mm, failed {rows[-1]['failed']}", flush=True)
    settings = {"ct": ct_path, "mask": mask_path, "view": "ap", "device": "cpu", "protocol": args.protocol, "cases": args.cases, "seed": args.seed,
                "realistic": args.realistic, "half_mm": args.half_mm, "ct_edges_in": args.ct_edges_in, "geometry": geometry.to_dict()}
    write_results(rows, args.out / Path(ct_path).name.split(".")[0], settings)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", action="append", required=True)
    parser.add_argument("--mask", action="append", required=True)
    parser.add_argument("--half-mm", type=float, default=45.0, help="keep the slices within this distance of the spine's centre (mm)")
    parser.add_argument("--protocol", default="paper")
    parser.add_argument("--realistic", action="store_true")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="global+opt")
    parser.add_argument("--ct-edges-in", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if len(args.ct) != len(args.mask):
        raise SystemExit("expected one --mask for each --ct")
    PoseProblem.LEAVE_OUT_CT_EDGES = not args.ct_edges_in
    for ct_path, mask_path in zip(args.ct, args.mask):
        run(ct_path, mask_path, args)


if __name__ == "__main__":
    main()
