"""Paper-criterion metrics of CLI results DIR/{name}_new.json for cases ROOT/{name}; marks the cases whose first result
was judged again (REJUDGED record) and whether that ended them. argv: ROOT DIR [BASE_DIR]"""
import json, sys, glob, os
sys.path.insert(0, "/work/main/SOPIRegistration")
import torch
from sopi.benchmark import case_metrics, target_points
from sopi.geometry import load_pose, NominalView, CArmGeometry
from sopi.io import read_ct, read_mask
S = "/work/main/SOPIRegistration/Resources/SampleData"; T = "/work/shared/data/tptbox_lumbar_crop"
CTS = {"sample": (f"{S}/sample_ct.nii.gz", f"{S}/sample_ct_vertebrae.nii.gz"), "pelvis": ("/tmp/data/ts_pelvis_ct.nii.gz", "/tmp/data/ts_pelvis_spine.nii.gz"),
       "chest": ("/tmp/data/popi_ct.nii.gz", "/tmp/data/popi_spine.nii.gz"), "tpt": (f"{T}/sub-ct_label-22_ct.nii.gz", f"{T}/sub-ct_seg-vert_label-22_msk.nii.gz")}
root, new = sys.argv[1], sys.argv[2]; base = sys.argv[3] if len(sys.argv) > 3 else None
pts = {}; tally = {}
def metrics(path, d, ct):
    r = json.load(open(path)); gt = load_pose(f"{d}/gt.json"); init = json.load(open(f"{d}/init.json"))
    nominal = NominalView(torch.tensor(init["matrix"], dtype=torch.float64), torch.tensor(init["isocenter_world_mm"], dtype=torch.float64), "nominal")
    geometry = CArmGeometry.load(f"{d}/geometry.json") if hasattr(CArmGeometry, "load") else None
    m = case_metrics(torch.tensor(r["matrix"], dtype=torch.float64), gt, nominal, geometry, pts[ct])
    return r, m
for path in sorted(glob.glob(f"{new}/*_new.json")):
    name = os.path.basename(path)[:-9]; ct = name.split("_")[0]; d = f"{root}/{name}"
    if ct not in pts: pts[ct] = target_points(read_mask(CTS[ct][1], read_ct(CTS[ct][0])))
    r, m = metrics(path, d, ct)
    judged = [s for s in r["stages"] if s["stage"].endswith("judged")]
    tag = "" if not judged else ("REJUDGED-TRUSTED" if not judged[0]["pass_likely_failed"] else "rejudged-flagged")
    t = tally.setdefault(ct, [0, 0, []]); t[0] += 1; t[1] += (not m.failed); t[2].append(m.mtre_mm)
    line = f"{name:10s} {'ok  ' if not m.failed else 'FAIL'} rot {m.paper_rotation_deg:5.2f} tr {m.paper_translation_mm:6.2f} mtre {m.mtre_mm:7.2f} conf {r['confidence']:.3f} {tag}"
    if base and os.path.exists(f"{base}/{name}_new.json"):
        rb, mb = metrics(f"{base}/{name}_new.json", d, ct)
        line += f" | base {'ok  ' if not mb.failed else 'FAIL'} tr {mb.paper_translation_mm:6.2f} mtre {mb.mtre_mm:7.2f} conf {rb['confidence']:.3f}"
    print(line)
import statistics
for ct, (n, ok, e) in tally.items(): print(ct, f"{ok}/{n}", "median mTRE", round(statistics.median(e), 2))
