"""mTRE of one result json against a case folder: one.py CASE RESULT..."""
import sys, json, torch
sys.path.insert(0, "benchmarks")
from independent_xrays import *  # noqa
case = Path(sys.argv[1])
tr = json.loads((case / "gt.json").read_text())
ct = read_ct(tr["ct"]); spine = read_mask(tr["mask"], ct)
geometry = CArmGeometry.preset(PRESET)
points = target_points(spine); nominal = nominal_view("ap", mask_centroid_world(spine), geometry.source_to_isocenter_mm)
truth = load_pose(case / "gt.json")
for r in sys.argv[2:]:
    res = json.loads(open(r).read())
    m = case_metrics(torch.tensor(res["matrix"], dtype=torch.float64), truth, nominal, geometry, points)
    print(r, "mtre %.2f failed %s conf %.3f lf %s reading %s" % (m.mtre_mm, m.failed, res["confidence"], res["likely_failed"], res.get("preparation", {}).get("polarity", res.get("polarity"))))
