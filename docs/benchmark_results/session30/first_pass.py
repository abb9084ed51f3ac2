"""For whole-register results with per-pass judgements (`session28/time_wide.py`'s RESULTS_DIR/{ct}_{case}_{version}.json
against CASES_ROOT/{ct}_{case}): the first pass's pose (its last stage's params), mTRE, own confidence and stage time
against the final result's, for every CT of `session28/time_wide.py`. Usage: first_pass.py RESULTS_DIR CASES_ROOT"""
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
CTS = {"sample": (f"{S}/sample_ct.nii.gz", f"{S}/sample_ct_vertebrae.nii.gz"),
       "pelvis": ("/tmp/data/ts_pelvis_ct.nii.gz", "/tmp/data/ts_pelvis_spine.nii.gz"),
       "chest": ("/tmp/data/popi_ct.nii.gz", "/tmp/data/popi_spine.nii.gz"),
       "tpt": (f"{T}/sub-ct_label-22_ct.nii.gz", f"{T}/sub-ct_seg-vert_label-22_msk.nii.gz")}
points = {}
for path in sorted(Path(sys.argv[1]).glob("*.json"), key=lambda p: (p.stem.split("_")[0], int(p.stem.split("_")[1]))):
    ct, case = path.stem.split("_")[:2]
    if ct not in points:
        points[ct] = target_points(read_mask(CTS[ct][1], read_ct(CTS[ct][0])))
    d = Path(sys.argv[2]) / f"{ct}_{case}"
    r = json.loads(path.read_text())
    init, truth = load_pose(d / "init.json"), load_pose(d / "gt.json")
    view = NominalView(init.to(torch.float64), torch.tensor(r["pivot_world_mm"], dtype=torch.float64), "initial")
    theta = lambda p: torch.tensor([[p[k] for k in PARAM_NAMES]], dtype=torch.float64)
    judged = [i for i, s in enumerate(r["stages"]) if "pass_confidence" in s]
    first = r["stages"][judged[0]]
    first_s = sum(s.get("time_s", 0.0) for s in r["stages"][: judged[0] + 1])
    e_first = float(mtre_mm(view.pose(theta(first["params"]))[0], truth, points[ct]))
    e_final = float(mtre_mm(torch.tensor(r["matrix"], dtype=torch.float64), truth, points[ct]))
    print(f"{ct} {case}: passes {len(judged)}, first pass mTRE {e_first:.2f} conf {first['pass_confidence']:.3f} "
          f"flagged {first['pass_likely_failed']} ({first_s:.1f} s of stages); final mTRE {e_final:.2f} conf {r['confidence']:.3f} "
          f"({sum(s.get('time_s', 0.0) for s in r['stages']):.1f} s of stages)")
