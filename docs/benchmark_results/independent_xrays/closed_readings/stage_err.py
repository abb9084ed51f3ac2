"""mTRE after each stage of single-pass results: stage_err.py DIR..."""
import sys, json, torch
sys.path.insert(0, "benchmarks")
from independent_xrays import *  # noqa
from sopi.geometry import NominalView  # noqa
cache = {}
for d in sys.argv[1:]:
    for case in sorted(Path(d).glob("case_*"), key=lambda p: int(p.name.split("_")[1])):
        res = json.loads((case / "result.json").read_text())
        labels = [s["stage"] for s in res["stages"]]
        if any(": " in l for l in labels): continue
        tr = json.loads((case / "gt.json").read_text())
        if tr["mask"] not in cache:
            ct = read_ct(tr["ct"]); spine = read_mask(tr["mask"], ct); g = CArmGeometry.preset(PRESET)
            cache[tr["mask"]] = (target_points(spine), nominal_view("ap", mask_centroid_world(spine), g.source_to_isocenter_mm), g)
        points, nominal, g = cache[tr["mask"]]
        truth = load_pose(case / "gt.json")
        out = []
        for s in res["stages"]:
            pose = nominal.pose(torch.tensor(list(s["params"].values()), dtype=torch.float64))
            out.append(f"{s['stage'].split(' ')[0][:6]} {case_metrics(pose, truth, nominal, g, points).mtre_mm:.2f}")
        print(d.split('/')[-1], case.name, " | ".join(out), flush=True)
