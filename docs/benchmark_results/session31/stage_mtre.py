"""mTRE after each stage of each pass of stored RESULT.json files (ROOT/{ct}_{case}_{version}.json, cases in CASES/{ct}_{case})."""
import json, sys, glob, os
sys.path.insert(0, "/work/main/SOPIRegistration")
import torch
from sopi.benchmark import target_points
from sopi.distances import mtre_mm
from sopi.geometry import load_pose, NominalView
from sopi.io import read_ct, read_mask
S = "/work/main/SOPIRegistration/Resources/SampleData"; T = "/work/shared/data/tptbox_lumbar_crop"
CTS = {"sample": (f"{S}/sample_ct.nii.gz", f"{S}/sample_ct_vertebrae.nii.gz"),
       "pelvis": ("/tmp/data/ts_pelvis_ct.nii.gz", "/tmp/data/ts_pelvis_spine.nii.gz"),
       "chest": ("/tmp/data/popi_ct.nii.gz", "/tmp/data/popi_spine.nii.gz"),
       "tpt": (f"{T}/sub-ct_label-22_ct.nii.gz", f"{T}/sub-ct_seg-vert_label-22_msk.nii.gz")}
root, cases = sys.argv[1], sys.argv[2]
points = {}
for path in sorted(glob.glob(f"{root}/*.json")):
    name = os.path.basename(path)[:-5]
    ct, case = name.split("_")[0], name.split("_")[1]
    if ct not in points:
        points[ct] = target_points(read_mask(CTS[ct][1], read_ct(CTS[ct][0])))
    r = json.load(open(path)); d = f"{cases}/{ct}_{case}"
    init, gt = load_pose(f"{d}/init.json"), load_pose(f"{d}/gt.json")
    view = NominalView(init, torch.tensor(r["pivot_world_mm"], dtype=torch.float64), "initial")
    out = []
    for s in r["stages"]:
        p = s["params"]; theta = torch.tensor([p[k] for k in ("rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm")], dtype=torch.float64)
        e = float(mtre_mm(view.pose(theta), gt, points[ct]))
        tag = s["stage"].split(":")[0] if ":" in s["stage"] else ""
        out.append(f"{s['stage'][-26:]}={e:.1f}({s.get('time_s',0):.1f}s)" + (f"[c{s['pass_confidence']:.2f}]" if 'pass_confidence' in s else ""))
    print(name, "final", r["confidence"], "|", " ".join(out))
