"""rank.py CASE OUT: like hyp.py, and for each search the first FFT candidates near the truth (rank among all, distinct rank)."""
import sys, json, torch, inspect, textwrap
from pathlib import Path
sys.path.insert(0, "/work/main/benchmarks"); sys.path.insert(0, "/work/main/SOPIRegistration")
from independent_xrays import *  # noqa
import sopi.registration.global_search as gs
import sopi.registration.api as api
case, out = Path(sys.argv[1]), sys.argv[2]
tr = json.loads((case / "gt.json").read_text())
ct = read_ct(tr["ct"]); spine = read_mask(tr["mask"], ct)
geometry = CArmGeometry.preset(PRESET)
points = target_points(spine); nominal = nominal_view("ap", mask_centroid_world(spine), geometry.source_to_isocenter_mm)
truth = load_pose(case / "gt.json")
def mtre(pose):
    return case_metrics(pose.reshape(4, 4).to(torch.float64), truth, nominal, geometry, points).mtre_mm
log = []
def hook(problem, stage, candidates, rotations, warps, small, search):
    reference = problem.reference
    pivot = float(gs.transform_points(reference.camera_from_world, reference.isocenter_world[None])[0, 2])
    log.append(dict(stage=(stage.roll_deg, stage.in_plane_deg, stage.roll_beyond_deg), n=len(candidates),
                    truth_theta=[round(v, 1) for v in reference.params(truth.to(torch.float64)).tolist()]))
    chosen, near = [], []
    for rank, (score, r, k, row, col) in enumerate(candidates[:3000]):
        theta0 = torch.zeros(6, dtype=torch.float64); theta0[:2] = rotations[r]
        angle, scale = warps[k]
        principal = small.principal_point_px
        offset = (col + principal[0] - search.principal_point_px[0], row + principal[1] - search.principal_point_px[1])
        pose = gs._matched_pose(problem.pose(theta0), search, offset, angle, scale, pivot)
        theta = reference.params(pose)
        distinct = all(not gs.same_hypothesis(theta, o) for o in chosen)
        if distinct:
            chosen.append(theta)
        e = mtre(pose)
        if e < 15 and len(near) < 5:
            near.append((rank, len(chosen) if distinct else -len(chosen), round(e, 1), round(score, 3), [round(v, 1) for v in theta.tolist()]))
    log.append(dict(top_score=round(candidates[0][0], 3), near=near))
src = textwrap.dedent(inspect.getsource(gs.global_search))
src = src.replace("    candidates.sort(key=lambda item: -item[0])\n", "    candidates.sort(key=lambda item: -item[0])\n    _HOOK(problem, stage, candidates, rotations, warps, small, search)\n")
gs.__dict__["_HOOK"] = hook
exec(compile(src, gs.__file__, "exec"), gs.__dict__)
api.global_search = gs.global_search
from sopi.cli import main
rc = main(["--progress", "none", "register", "--ct", tr["ct"], "--xray", str(case / "xray.mha"), "--geometry", str(case / "geometry.json"),
           "--init", str(case / "init.json"), "--seed", str(tr["seed"] + tr["case"]), "--out", out + ".json"])
res = json.loads(open(out + ".json").read())
m = case_metrics(torch.tensor(res["matrix"], dtype=torch.float64), truth, nominal, geometry, points)
with open(out + ".txt", "w") as f:
    for e in log:
        print(e, file=f)
    print("RESULT mtre %.2f conf %.3f lf %s" % (m.mtre_mm, res["confidence"], res["likely_failed"]), file=f)
