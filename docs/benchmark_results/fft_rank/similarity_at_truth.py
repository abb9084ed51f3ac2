"""Similarity at the truth and at the result, spine-weighted and with wider regions (chest wide failures)."""
import json, sys, torch
from dataclasses import replace
from sopi.io import read_ct, read_mask, read_xray
from sopi.geometry import load_pose
from sopi.render import working_volumes
from sopi.registration.preparation import prepare_fixed
from sopi.registration.problem import PoseProblem, exposed_field
from sopi.segment import mask_centroid_world
from sopi.io_xray import working_xray
from sopi.xray_orientation import orient_xray

ct_path, mask_path, case, result = sys.argv[1:5]
ct = read_ct(ct_path); spine = read_mask(mask_path, ct); spine = spine.with_data((spine.data != 0).to(torch.uint8))
fixed = read_xray(f"{case}/xray.mha")
init = load_pose(f"{case}/init.json"); gt = load_pose(f"{case}/gt.json")
est = torch.tensor(json.load(open(result))["matrix"], dtype=torch.float64) if result != "none" else gt
pivot = mask_centroid_world(spine)
fixed, _ = orient_xray(fixed, init, "auto"); fixed, _ = working_xray(fixed)
att, sp, _ = working_volumes(ct, spine)
fixed, weight, prep = prepare_fixed(fixed, att, init, torch.device("cpu"))
def problem(mask, dilation):
    return PoseProblem(att, fixed.image, fixed.geometry, init.to(torch.float64), pivot, mask=mask, xray_weight=weight,
                       exposed=exposed_field(fixed), mask_dilation_px=dilation)
ref = problem(sp, 5)
thetas = torch.stack([ref.reference.params(gt), ref.reference.params(est)])
print("theta gt ", [round(v, 1) for v in thetas[0].tolist()]); print("theta est", [round(v, 1) for v in thetas[1].tolist()])
longest = max(fixed.geometry.rows, fixed.geometry.cols)
for name, mask, dil in [("spine d5", sp, 5), ("spine d15", sp, 15), ("spine d30", sp, 30), ("no mask", None, 5)]:
    p = problem(mask, dil)
    for px in (64, 128):
        f = max(1, round(longest / px))
        for measure in ("gradient-ncc", "gc"):
            with torch.no_grad():
                s = p.similarity(thetas, f, measure)
            print(f"{name:10s} {px:4d}px {measure:13s} gt {float(s[0]):.3f} est {float(s[1]):.3f}  gt-est {float(s[0]-s[1]):+.3f}")
