"""own_one.py CASE MASK RESULT...: mTRE of a sopi-simulated case against its gt.json."""
import sys, json, torch
sys.path.insert(0, "benchmarks")
from independent_xrays import *  # noqa
case = Path(sys.argv[1]); tr = json.loads((case / "gt.json").read_text())
ct = read_ct(tr["ct"]); spine = read_mask(sys.argv[2], ct)
geometry = CArmGeometry.load(case / "geometry.json")
points = target_points(spine); nominal = nominal_view("ap", mask_centroid_world(spine), geometry.source_to_isocenter_mm)
truth = load_pose(case / "gt.json")
for r in sys.argv[3:]:
    res = json.loads(open(r).read()); p = res.get("xray_preparation", {})
    m = case_metrics(torch.tensor(res["matrix"], dtype=torch.float64), truth, nominal, geometry, points)
    print(r.split("/")[-1], "mtre %.2f failed %s conf %.3f lf %s | %s first %s" % (m.mtre_mm, m.failed, res["confidence"], res["likely_failed"], p.get("polarity"), p.get("polarity_first_passes")))
