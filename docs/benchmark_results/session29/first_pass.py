"""For whole-register results with per-pass judgements: the first pass's pose (its last stage's params), its mTRE and
its own confidence, against the final result's (every CT of time_wide.py but LIDC)."""
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, "/work/main/SOPIRegistration")
from sopi.benchmark import target_points
from sopi.distances import mtre_mm
from sopi.geometry import NominalView, load_pose, PARAM_NAMES
from sopi.io import read_ct, read_mask
S = "/work/main/SOPIRegistration/Resources/SampleData"
T = "/work/shared/data/tptbox_lumbar_crop"
MASKS = {"sample": (f"{S}/sample_ct.nii.gz", f"{S}/sample_ct_vertebrae.nii.gz"), "tpt": (f"{T}/sub-ct_label-22_ct.nii.gz", f"{T}/sub-ct_seg-vert_label-22_msk.nii.gz"),
         "pelvis": ("/tmp/data/ts_pelvis_ct.nii.gz", "/tmp/data/ts_pelvis_spine.nii.gz"), "chest": ("/tmp/data/popi_ct.nii.gz", "/tmp/data/popi_spine.nii.gz")}
POINTS = {}

for path in sorted(Path(sys.argv[1]).glob("*.json")):
    ct, case = path.stem.split("_")[:2]
    if ct not in POINTS:
        POINTS[ct] = target_points(read_mask(MASKS[ct][1], read_ct(MASKS[ct][0])))
    points = POINTS[ct]
    d = Path(sys.argv[2]) / f"{ct}_{case}"
    r = json.loads(path.read_text())
    init, truth = load_pose(d / "init.json"), load_pose(d / "gt.json")
    view = NominalView(init.to(torch.float64), torch.tensor(r["pivot_world_mm"], dtype=torch.float64), "initial")
    theta = lambda p: torch.tensor([[p[k] for k in PARAM_NAMES]], dtype=torch.float64)
    check = float((view.pose(theta(r["params"]))[0] - torch.tensor(r["matrix"], dtype=torch.float64)).abs().max())
    judged = [s for s in r["stages"] if "pass_confidence" in s]
    first = judged[0]
    e_first = float(mtre_mm(view.pose(theta(first["params"]))[0], truth, points))
    e_final = float(mtre_mm(torch.tensor(r["matrix"], dtype=torch.float64), truth, points))
    print(f"{ct} {case}: passes {len(judged)}, first pass mTRE {e_first:.2f} conf {first['pass_confidence']:.3f} "
          f"flagged {first['pass_likely_failed']}; final mTRE {e_final:.2f} conf {r['confidence']:.3f}; pose check {check:.1e}")
