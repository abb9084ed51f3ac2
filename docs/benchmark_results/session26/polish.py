"""From each registered pose, a joint polish of gradient-ncc@2 (6 params): does it move toward the truth?"""
import sys, csv, os, time
sys.path.insert(0, "/work/main/SOPIRegistration")
import sopi
import torch
from sopi.benchmark import target_points
from sopi.distances import mtre_mm
from sopi.geometry import CArmGeometry, nominal_view
from sopi.io import read_ct, read_mask
from sopi.io_xray import XRay
from sopi.registration.preparation import prepare_fixed
from sopi.registration.problem import PoseProblem, exposed_field
from sopi.registration.methods import Stage, DEPTH_SCAN
from sopi.registration.api import _run_stage
from sopi.registration.optimizers import Monitor
from sopi.render import rendering_volume
from sopi.segment import mask_centroid_world
from sopi.simulate import simulate_cases
P = ("rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm")
ct = read_ct(sys.argv[1]); spine = read_mask(sys.argv[2], ct); spine = spine.with_data((spine.data != 0).to(torch.uint8))
points = target_points(spine)
geometry = CArmGeometry.preset("perlove-plx118f"); pivot = mask_centroid_world(spine)
nominal = nominal_view("ap", pivot, geometry.source_to_isocenter_mm)
rows = [r for r in csv.DictReader(open(sys.argv[3] + "/results.csv")) if r["method"] == "global+opt"]
_, images, _ = simulate_cases(ct, nominal, geometry, "paper", 10, int(os.environ.get("SEED", 0)), True, "cpu", spine=spine)
att = rendering_volume(ct, "hu"); start = nominal.pose(torch.zeros(6, dtype=torch.float64)).to(torch.float64)
gens, pop, rs, ts = int(os.environ.get("G", 10)), int(os.environ.get("POP", 12)), float(os.environ.get("RS", 0.5)), float(os.environ.get("TS", 1.0))
stages = [Stage("cma-es", "gradient-ncc", 2, (rs, ts), gens, population=pop, sigma=1.0, patience=4, hold_ct_edges=True)]
if os.environ.get("OPT") == "adam":
    stages = [Stage("adam", os.environ.get("M", "gradient-ncc"), int(os.environ.get("F", 2)), (rs, ts), gens, learning_rate=float(os.environ.get("LR", 0.1)), patience=int(os.environ.get("PAT", 10)), hold_ct_edges=True, spine_window=bool(os.environ.get("WIN")))]
if os.environ.get("RESCAN"):
    stages.append(DEPTH_SCAN)
before, after = [], []
for r in rows:
    est = torch.tensor([float(r["est_" + k]) for k in P], dtype=torch.float64); tru = torch.tensor([float(r["true_" + k]) for k in P], dtype=torch.float64)
    fixed, weight, _ = prepare_fixed(XRay(images[int(r["case"])], geometry), att, start, torch.device("cpu"))
    pr = PoseProblem(att, fixed.image, geometry, start, pivot, step_mm=float(os.environ.get("STEP", 1.0)), mask=spine, xray_weight=weight, exposed=exposed_field(fixed))
    pr.adapt_to_xray(est, 4, "gradient-ncc")
    theta = est; t0 = time.time()
    if os.environ.get("OPT") == "grid2d":  # depth x one rotation axis, every pair rendered, the best kept
        axis = int(os.environ.get("AXIS", 0))
        depths = torch.arange(-12.0, 12.01, 1.5, dtype=torch.float64)
        turns = torch.linspace(-float(os.environ.get("DEG", 2.0)), float(os.environ.get("DEG", 2.0)), int(os.environ.get("NT", 9)), dtype=torch.float64)
        with torch.no_grad():
            direction = pr.depth_direction(est)
            grid = []
            for turn in turns:
                moved = est.clone(); moved[axis] += turn
                grid.append(moved[None] + depths[:, None] * direction[None])
            grid = torch.cat(grid)
            pr.hold_ct_edges(est)
            scores = pr.similarity(grid, 2, "gradient-ncc")
            pr.hold_ct_edges(None)
        theta = grid[int(scores.argmax())]
        class _O: evaluations = len(grid)
        out = _O()
    else:
      for st in stages:
        out = _run_stage(pr, st, theta, 0, Monitor())
        theta = out.theta.to(torch.float64)
    e0 = float(mtre_mm(pr.pose(est), pr.pose(tru), points)); e1 = float(mtre_mm(pr.pose(theta), pr.pose(tru), points))
    with torch.no_grad():
        pr.hold_ct_edges(est)
        g0, g1, gt = pr.similarity(torch.stack([est, theta, tru]), int(os.environ.get("F", 2)), os.environ.get("M", "gradient-ncc")).tolist()
        pr.hold_ct_edges(None)
    before.append(e0); after.append(e1)
    dt = time.time() - t0; print(f"case {r['case']} dt {dt:.1f} mTRE {e0:5.2f} -> {e1:5.2f}  evals {out.evaluations}  gradient-ncc@2 {g0:.4f} -> {g1:.4f} (gain {g1 - g0:+.4f}) truth {gt:.4f}", flush=True)
import statistics as s
print(f"median {s.median(before):.2f} -> {s.median(after):.2f}; <3mm {sum(e < 3 for e in before)} -> {sum(e < 3 for e in after)}; <1mm {sum(e < 1 for e in before)} -> {sum(e < 1 for e in after)}")
