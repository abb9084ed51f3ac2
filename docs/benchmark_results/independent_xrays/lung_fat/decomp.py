"""Per case: the result's error at the spine centroid in the true camera frame (x, y in-plane; z depth, mm)."""
import sys, json, torch
sys.path.insert(0, "SOPIRegistration")
from pathlib import Path
from sopi.io import read_ct, read_mask
from sopi.geometry import load_pose
from sopi.segment import mask_centroid_world
cache = {}
for d in sys.argv[1:]:
    for f in sorted(Path(d).glob("case_*"), key=lambda f: int(f.name.split("_")[1])):
        if not (f / "result.json").exists():
            continue
        gt = json.loads((f / "gt.json").read_text())
        if gt["mask"] not in cache:
            ct = read_ct(gt["ct"]); cache[gt["mask"]] = mask_centroid_world(read_mask(gt["mask"], ct)).to(torch.float64)
        c = cache[gt["mask"]]
        truth = load_pose(f / "gt.json").to(torch.float64)
        res = json.loads((f / "result.json").read_text())
        R = torch.tensor(res["matrix"], dtype=torch.float64)
        p = torch.cat([c, torch.ones(1, dtype=torch.float64)])
        a, b = (truth @ p)[:3], (R @ p)[:3]
        delta = b - a
        chain = json.loads((f / "chain.json").read_text())
        print(f"{f.parent.name}/{f.name} {chain['output']:8s} err x {delta[0]:+6.2f} y {delta[1]:+6.2f} depth {delta[2]:+7.2f} mm  conf {res['confidence']:.2f} flagged {res['likely_failed']}")
