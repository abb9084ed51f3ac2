"""mTRE of probe_run records against gt, and against session 30's stored results of the same cases (argv: CASES_ROOT JSONL... [--ref DIR])."""
import json, sys, glob, os
sys.path.insert(0, "/work/main/SOPIRegistration")
import torch
from sopi.benchmark import target_points
from sopi.distances import mtre_mm
from sopi.geometry import load_pose
from sopi.io import read_ct, read_mask
S = "/work/main/SOPIRegistration/Resources/SampleData"; T = "/work/shared/data/tptbox_lumbar_crop"
CTS = {"sample": (f"{S}/sample_ct.nii.gz", f"{S}/sample_ct_vertebrae.nii.gz"), "pelvis": ("/tmp/data/ts_pelvis_ct.nii.gz", "/tmp/data/ts_pelvis_spine.nii.gz"),
       "chest": ("/tmp/data/popi_ct.nii.gz", "/tmp/data/popi_spine.nii.gz"), "tpt": (f"{T}/sub-ct_label-22_ct.nii.gz", f"{T}/sub-ct_seg-vert_label-22_msk.nii.gz")}
args = sys.argv[1:]; ref = None
if "--ref" in args: i = args.index("--ref"); ref = args[i + 1]; args = args[:i] + args[i + 2:]
root, files = args[0], args[1:]
pts = {}
rows = []
for f in files:
    for l in open(f):
        r = json.loads(l); name = r["case"]; ct = name.split("_")[0]
        if ct not in pts: pts[ct] = target_points(read_mask(CTS[ct][1], read_ct(CTS[ct][0])))
        gt = load_pose(f"{root}/{name}/gt.json")
        e = float(mtre_mm(torch.tensor(r["matrix"], dtype=torch.float64), gt, pts[ct]))
        line = f"{name:10s} mtre {e:7.2f} conf {r['confidence']:.3f} engine {r['engine_s']:6.1f}"
        if ref and os.path.exists(f"{ref}/{name}_new.json"):
            q = json.load(open(f"{ref}/{name}_new.json")); e2 = float(mtre_mm(torch.tensor(q["matrix"], dtype=torch.float64), gt, pts[ct]))
            line += f" | ref mtre {e2:7.2f} conf {q['confidence']:.3f}" + ("  SAME" if abs(e - e2) < 0.01 else "  DIFF")
        rows.append((name, e, r["confidence"], line))
for _, _, _, line in sorted(rows): print(line)
