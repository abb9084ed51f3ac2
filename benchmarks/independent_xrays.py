#!/usr/bin/env python3
"""Registration on X-rays that sopi did not render: DiffDRR's projector and an X-ray chain written here.

Every other realistic benchmark draws its X-rays with sopi's own renderer and sopi's own physics
(``sopi.simulate``, ``sopi.xray_physics``), so a registration may lean on something only that renderer
does. Here the X-ray of each case comes from:

* **DiffDRR 0.6.1** (``renderer="siddon"``: exact ray-voxel intersections, nearest-neighbour values)
  on **DiffDRR's own HU-to-density map** (``diffdrr.data.read``: air to the softest tissue, linear in HU
  above, bone above 350 HU times ``bone_attenuation_multiplier``), not sopi's attenuation;
* **the chain below** (numpy and scipy only, nothing of ``sopi.xray_physics``), each parameter drawn
  per case from the range given, seeded by ``--seed`` and the case index.

The poses are the benchmark's (``sopi.simulate.case_poses``: protocol, seed, the nominal AP start about
the spine's centroid), so ``sopi benchmark --protocol P --seed S`` and this script score the same truths
from the same starts; only the images differ.

Chain (line integral ``p`` from DiffDRR, in density x mm):

| step | parameter | range | why |
|---|---|---|---|
| bone | ``bone_attenuation_multiplier`` | U(1.0, 2.5) | beam hardness: DiffDRR's tutorials use 1-2.5 |
| attenuation | ``k`` so that the 99th percentile of ``k p`` is ``mu_max`` | U(3.5, 6) | an AP trunk lets 0.3-3 % of a 70-90 kVp beam through |
| metal | 0-3 straight instruments, length U(40, 120) mm, width U(1.5, 6) mm, extra line integral U(3, 8) | | K-wires to pedicle screws and retractor blades: nearly opaque |
| scatter | scatter-to-primary ratio ``spr`` U(0.3, 2.0), Gaussian kernel sigma U(15, 40) mm | | with and without an anti-scatter grid (Boone and Seibert 1988) |
| dose | photons per pixel behind the median of the body ``photons``, log-uniform (150, 5000) | | fluoroscopy (10-50 nGy a frame at the detector) to low-dose radiography |
| blur | detector Gaussian sigma U(0.4, 1.2) px | | flat panel and image intensifier MTFs |
| field | circular field radius U(0.85, 1.05) x the half-width; two opposite collimator blades with p 0.7, each U(5, 25) % in, turned U(-10, 10) deg; transmission under a blade U(2, 8) % | | image intensifier and shutters |
| output | ``log``: -log of the normalised counts (bone bright), or ``display``: counts^gamma, gamma U(0.5, 1.0), unsharp mask (sigma 8 px, amount U(0.5, 1.5)), 12-bit (bone dark) | each p 0.5 | vendor processing |

Usage (DiffDRR lives in ``.bench-venv``, see docs/benchmarks.md's DRR projector section; ``run`` uses the
product's ``.venv``):

    .bench-venv/bin/python benchmarks/independent_xrays.py make CT MASK --protocol paper --seed 0 --cases 10 --out DIR [--clean]
    .venv/bin/python benchmarks/independent_xrays.py run DIR [--jobs 2] [-- extra sopi register options]
    .venv/bin/python benchmarks/independent_xrays.py table DIR...
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "SOPIRegistration"))

from sopi.benchmark import case_metrics, target_points  # noqa: E402
from sopi.geometry import RAS_FROM_LPS, CArmGeometry, invert_rigid, load_pose, nominal_view, params_to_dict, save_pose  # noqa: E402
from sopi.atomic import write_json  # noqa: E402
from sopi.io import read_ct, read_mask, write_xray  # noqa: E402
from sopi.segment import mask_centroid_world  # noqa: E402
from sopi.simulate import case_poses  # noqa: E402

#: DiffDRR's camera frame is ours turned 180 degrees about the principal ray (benchmarks/drr_speed.py).
FLIP_XY = torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64))
PRESET = "perlove-plx118f"


# --------------------------------------------------------------------------- the projector


def diffdrr_image(hu_volume, camera_from_world: torch.Tensor, geometry: CArmGeometry, bone_multiplier: float) -> np.ndarray:
    """DiffDRR's Siddon line integral of its own density map of ``hu_volume`` (rows, cols), bone bright."""
    from diffdrr.data import read as diffdrr_read
    from diffdrr.drr import DRR
    from diffdrr.pose import RigidTransform
    from torchio import ScalarImage

    ras_from_index = (RAS_FROM_LPS @ hu_volume.world_from_index).numpy()
    voxels = hu_volume.data.permute(2, 1, 0)[None].to(torch.float32).contiguous()  # torchio (C, I, J, K)
    subject = diffdrr_read(ScalarImage(tensor=voxels, affine=ras_from_index), orientation=None, center_volume=False,
                           bone_attenuation_multiplier=bone_multiplier)
    du, dv = geometry.pixel_spacing_mm
    drr = DRR(subject, sdd=geometry.sdd_mm, height=geometry.rows, width=geometry.cols, delx=du, dely=dv,
              renderer="siddon", reverse_x_axis=True)
    matrix = RAS_FROM_LPS @ invert_rigid(camera_from_world) @ FLIP_XY
    with torch.no_grad():
        image = drr(RigidTransform(matrix[None].to(torch.float32)))
    return image[0, 0].double().numpy()


# --------------------------------------------------------------------------- the X-ray chain


def draw_chain(rng: np.random.Generator) -> dict:
    """One case's chain parameters (the table in the module docstring)."""
    blades = []
    if rng.random() < 0.7:
        axis = int(rng.integers(2))
        turn = float(rng.uniform(-10, 10))
        blades = [{"axis": axis, "side": side, "fraction": float(rng.uniform(0.05, 0.25)), "turn_deg": turn} for side in (-1, 1)]
    instruments = [{"centre": [float(v) for v in rng.uniform(0.2, 0.8, 2)], "angle_deg": float(rng.uniform(0, 180)),
                    "length_mm": float(rng.uniform(40, 120)), "width_mm": float(rng.uniform(1.5, 6)), "line_integral": float(rng.uniform(3, 8))}
                   for _ in range(int(rng.integers(0, 4)))]
    return {
        "bone_multiplier": float(rng.uniform(1.0, 2.5)),
        "mu_max": float(rng.uniform(3.5, 6)),
        "instruments": instruments,
        "spr": float(rng.uniform(0.3, 2.0)),
        "scatter_sigma_mm": float(rng.uniform(15, 40)),
        "photons": float(math.exp(rng.uniform(math.log(150), math.log(5000)))),
        "blur_px": float(rng.uniform(0.4, 1.2)),
        "field_radius": float(rng.uniform(0.85, 1.05)),
        "blades": blades,
        "blade_transmission": float(rng.uniform(0.02, 0.08)),
        "output": "log" if rng.random() < 0.5 else "display",
        "gamma": float(rng.uniform(0.5, 1.0)),
        "unsharp_amount": float(rng.uniform(0.5, 1.5)),
    }


def apply_chain(line_integral: np.ndarray, chain: dict, pixel_mm: float, rng: np.random.Generator) -> np.ndarray:
    """The X-ray the detector gives for DiffDRR's ``line_integral`` under ``chain`` (float32 image)."""
    from scipy.ndimage import gaussian_filter

    rows, cols = line_integral.shape
    body = line_integral[line_integral > 0]
    k = chain["mu_max"] / max(float(np.percentile(body, 99)) if body.size else 1.0, 1e-6)
    mu = k * line_integral
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    for tool in chain["instruments"]:  # a straight bar of the given length and width
        cy, cx = tool["centre"][0] * rows, tool["centre"][1] * cols
        angle = math.radians(tool["angle_deg"])
        along = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
        across = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
        inside = (np.abs(along) <= tool["length_mm"] / pixel_mm / 2) & (np.abs(across) <= tool["width_mm"] / pixel_mm / 2)
        mu = mu + inside * tool["line_integral"]
    primary = np.exp(-mu)
    scatter = chain["spr"] * gaussian_filter(primary, chain["scatter_sigma_mm"] / pixel_mm, mode="nearest")
    field = np.ones_like(primary)
    radius = chain["field_radius"] * min(rows, cols) / 2
    field[(yy - (rows - 1) / 2) ** 2 + (xx - (cols - 1) / 2) ** 2 > radius**2] = 0.0
    for blade in chain["blades"]:
        turn = math.radians(blade["turn_deg"])
        u, v = (xx - (cols - 1) / 2) / cols, (yy - (rows - 1) / 2) / rows
        coordinate = (u * math.cos(turn) + v * math.sin(turn)) if blade["axis"] == 0 else (v * math.cos(turn) - u * math.sin(turn))
        edge = 0.5 - blade["fraction"]
        under = coordinate * blade["side"] > edge
        field[under & (field > 0)] = chain["blade_transmission"]
    # the dose is set behind the body (an automatic exposure control): n0 photons a pixel without the patient
    n0 = chain["photons"] / max(float(np.median((primary + scatter)[line_integral > np.percentile(body, 10)])) if body.size else 1.0, 1e-9)
    expected = n0 * (primary + scatter) * field
    counts = rng.poisson(expected).astype(np.float64)
    counts = gaussian_filter(counts, chain["blur_px"], mode="nearest")
    normalised = np.clip(counts / n0, 0.5 / n0, None)
    if chain["output"] == "log":
        return (-np.log(normalised)).astype(np.float32)
    shown = normalised ** chain["gamma"]
    shown = shown + chain["unsharp_amount"] * (shown - gaussian_filter(shown, 8.0, mode="nearest"))
    shown = (shown - shown.min()) / max(float(np.ptp(shown)), 1e-12)
    return np.round(shown * 4095).astype(np.float32)


# --------------------------------------------------------------------------- make, run, table


def make(args: argparse.Namespace) -> None:
    ct = read_ct(args.ct)
    spine = read_mask(args.mask, ct)
    geometry = CArmGeometry.preset(PRESET)
    nominal = nominal_view("ap", mask_centroid_world(spine), geometry.source_to_isocenter_mm)
    thetas = case_poses(nominal, args.protocol, args.cases, args.seed, spine)
    out = Path(args.out)
    for index, theta in enumerate(thetas):
        folder = out / f"case_{index}"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([args.seed, index, 20261206])
        chain = draw_chain(rng)
        truth = nominal.pose(theta)
        if args.clean:  # DiffDRR's projector alone: its line integral at DiffDRR's default bone weight
            chain = {"output": "clean", "bone_multiplier": 1.0, "instruments": [], "blades": []}
        line_integral = diffdrr_image(ct, truth, geometry, chain["bone_multiplier"])
        image = line_integral.astype(np.float32) if args.clean else apply_chain(line_integral, chain, float(geometry.pixel_spacing_mm[0]), rng)
        write_xray(folder / "xray.mha", torch.from_numpy(image), geometry)
        geometry.save(folder / "geometry.json")
        common = {"ct": str(args.ct), "mask": str(args.mask), "isocenter_world_mm": nominal.isocenter_world.tolist()}
        save_pose(folder / "gt.json", truth, params=params_to_dict(theta), protocol=args.protocol, seed=args.seed, case=index,
                  cases=args.cases, projector="diffdrr 0.6.1 siddon", **common)
        save_pose(folder / "init.json", nominal.camera_from_world, params=params_to_dict(torch.zeros(6)), **common)
        write_json(folder / "chain.json", chain)
        print(f"{folder}: {chain['output']}, {len(chain['instruments'])} instruments, {len(chain['blades'])} blades, "
              f"spr {chain.get('spr', 0):.2f}, photons {chain.get('photons', math.inf):.0f}", flush=True)


def _register(folder: Path, seed: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "sopi", "--progress", "none", "register", "--ct", json.loads((folder / "gt.json").read_text())["ct"],
               "--xray", str(folder / "xray.mha"), "--geometry", str(folder / "geometry.json"), "--init", str(folder / "init.json"),
               "--seed", str(seed), "--out", str(folder / "result.json"), *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO / "SOPIRegistration"), OMP_NUM_THREADS="1")
    with open(folder / "register.log", "w") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)


def run(args: argparse.Namespace) -> None:
    folders = sorted((f for d in args.folders for f in Path(d).glob("case_*")), key=lambda f: (str(f.parent), int(f.name.split("_")[1])))
    pending, running = list(folders), {}
    while pending or running:
        while pending and len(running) < args.jobs:
            folder = pending.pop(0)
            truth = json.loads((folder / "gt.json").read_text())
            running[folder] = (_register(folder, truth["seed"] + truth["case"], args.extra), time.perf_counter())
        for folder, (process, started) in list(running.items()):
            if process.poll() is not None:
                (folder / "wall_s.txt").write_text(f"{time.perf_counter() - started:.2f}\n")
                print(f"{folder}: exit {process.returncode}", flush=True)
                del running[folder]
        time.sleep(0.5)
    for directory in args.folders:
        score(Path(directory))


def score(directory: Path) -> None:
    """``results.csv`` in ``directory``: the benchmark's metrics of every case's ``result.json``."""
    rows = []
    geometry = CArmGeometry.preset(PRESET)
    cache = {}
    for folder in sorted(directory.glob("case_*"), key=lambda f: int(f.name.split("_")[1])):
        truth_record = json.loads((folder / "gt.json").read_text())
        if truth_record["mask"] not in cache:
            ct = read_ct(truth_record["ct"])
            spine = read_mask(truth_record["mask"], ct)
            cache[truth_record["mask"]] = (target_points(spine), nominal_view("ap", mask_centroid_world(spine), geometry.source_to_isocenter_mm))
        points, nominal = cache[truth_record["mask"]]
        truth = load_pose(folder / "gt.json")
        chain = json.loads((folder / "chain.json").read_text())
        row = {"case": truth_record["case"], "output": chain["output"], "instruments": len(chain["instruments"]), "blades": len(chain["blades"])}
        for name, pose in (("start", load_pose(folder / "init.json")), ("result", None)):
            if pose is None:
                if not (folder / "result.json").exists():
                    row.update(failed=True, mtre_mm=float("nan"), confidence=float("nan"), likely_failed=True, time_s=float("nan"))
                    continue
                result = json.loads((folder / "result.json").read_text())
                pose = torch.tensor(result["matrix"], dtype=torch.float64)
                row.update(confidence=result["confidence"], likely_failed=result["likely_failed"],
                           time_s=float((folder / "wall_s.txt").read_text()) if (folder / "wall_s.txt").exists() else float("nan"))
            metrics = case_metrics(pose, truth, nominal, geometry, points)
            prefix = "start_" if name == "start" else ""
            row.update({f"{prefix}mtre_mm": metrics.mtre_mm, f"{prefix}failed": metrics.failed})
            if name == "result":
                row.update(rotation_sum_deg=metrics.paper_rotation_deg, translation_sum_mm=metrics.paper_translation_mm)
        rows.append(row)
    keys = sorted({key for row in rows for key in row}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with open(directory / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    print(summary_line(directory, rows))


def summary_line(directory: Path, rows: list[dict]) -> str:
    mtre = [float(r["mtre_mm"]) for r in rows]
    failed = [str(r["failed"]) == "True" for r in rows]
    flagged = [str(r["likely_failed"]) == "True" for r in rows]
    unflagged = [round(m, 1) for m, f, g in zip(mtre, failed, flagged) if f and not g]
    times = [float(r["time_s"]) for r in rows if not math.isnan(float(r["time_s"]))]
    return (f"{directory}: success {failed.count(False)}/{len(rows)}, < 10 mm {sum(m < 10 for m in mtre)}/{len(rows)}, "
            f"median {statistics.median(mtre):.2f} mm, failures not flagged {unflagged}, successes flagged "
            f"{sum(g and not f for f, g in zip(failed, flagged))}, median time {statistics.median(times) if times else float('nan'):.1f} s\n    "
            + " ".join(f"{m:.1f}" for m in mtre))


def table(args: argparse.Namespace) -> None:
    for directory in args.folders:
        print(summary_line(Path(directory), list(csv.DictReader(open(Path(directory) / "results.csv")))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    maker = commands.add_parser("make", help="render the cases with DiffDRR and the chain (.bench-venv)")
    maker.add_argument("ct")
    maker.add_argument("mask")
    maker.add_argument("--protocol", default="paper")
    maker.add_argument("--seed", type=int, default=0)
    maker.add_argument("--cases", type=int, default=10)
    maker.add_argument("--out", required=True)
    maker.add_argument("--clean", action="store_true", help="DiffDRR's line integral only, without the chain")
    runner = commands.add_parser("run", help="sopi register every case (one thread each), then score")
    runner.add_argument("folders", nargs="+")
    runner.add_argument("--jobs", type=int, default=2)
    tabler = commands.add_parser("table", help="one line per folder from its results.csv")
    tabler.add_argument("folders", nargs="+")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # run: more sopi register options after --
    args = parser.parse_args(argv[: len(argv) - len(extra) - (1 if extra or "--" in argv else 0)])
    args.extra = extra
    {"make": make, "run": run, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
