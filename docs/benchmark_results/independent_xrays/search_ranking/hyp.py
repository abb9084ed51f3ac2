"""hyp.py CASE OUT: register CASE as the benchmark does, recording every global-search hypothesis (before and after
its refinement) and its mTRE to the truth."""
import sys, json, torch
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
orig_refiner = gs._refiner
def refiner(problem, stage, seed, cancel):
    refine = orig_refiner(problem, stage, seed, cancel)
    def wrapped(theta, index, *a, **k):
        o = refine(theta, index, *a, **k)
        log.append(dict(roll=stage.roll_deg, inplane=stage.in_plane_deg, index=index, before=mtre(problem.pose(theta.reshape(1, 6))[0]),
                        after=mtre(problem.pose(o.theta.reshape(1, 6))[0]), sim=-float(o.loss), gens=o.iterations))
        return o
    return wrapped
gs._refiner = refiner
orig_gs = api.global_search
def g(problem, stage, *a, **k):
    o = orig_gs(problem, stage, *a, **k)
    log.append(dict(outcome=mtre(problem.pose(o.theta.reshape(1, 6))[0]), searched=o.searched, start_conf=o.start_confidence))
    return o
api.global_search = g
from sopi.cli import main
rc = main(["--progress", "none", "register", "--ct", tr["ct"], "--xray", str(case / "xray.mha"), "--geometry", str(case / "geometry.json"),
           "--init", str(case / "init.json"), "--seed", str(tr["seed"] + tr["case"]), "--out", out + ".json"])
res = json.loads(open(out + ".json").read())
m = case_metrics(torch.tensor(res["matrix"], dtype=torch.float64), truth, nominal, geometry, points)
with open(out + ".txt", "w") as f:
    for e in log:
        print(e, file=f)
    print("RESULT mtre %.2f conf %.3f lf %s" % (m.mtre_mm, res["confidence"], res["likely_failed"]), file=f)
