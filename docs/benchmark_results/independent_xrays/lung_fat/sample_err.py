import sys, json, torch
sys.path.insert(0, "SOPIRegistration")
from sopi.geometry import load_pose
from sopi.io import read_ct, read_mask
from sopi.benchmark import target_points
from sopi.distances import mtre_mm
S = "SOPIRegistration/Resources/SampleData"
ct = read_ct(f"{S}/sample_ct.nii.gz"); pts = target_points(read_mask(f"{S}/sample_ct_vertebrae.nii.gz", ct))
truth = load_pose(f"{S}/sample_xray_truth.json").to(torch.float64)
for f in sys.argv[1:]:
    R = torch.tensor(json.load(open(f))["matrix"], dtype=torch.float64)
    c = pts.mean(0); p = torch.cat([c, torch.ones(1, dtype=torch.float64)])
    print(f, "mTRE", round(float(mtre_mm(R, truth, pts)), 3), "depth err", round(float((R @ p)[2] - (truth @ p)[2]), 3))
