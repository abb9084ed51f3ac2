import json, sys
sys.argv = ["x"]
sys.path.insert(0, "/work/main/SOPIRegistration")
import torch
from sopi.benchmark import case_metrics, target_points
from sopi.geometry import load_pose, NominalView, CArmGeometry
from sopi.io import read_ct, read_mask
S = "/work/main/SOPIRegistration/Resources/SampleData"; T = "/work/shared/data/tptbox_lumbar_crop"
CTS = {"sample": (f"{S}/sample_ct.nii.gz", f"{S}/sample_ct_vertebrae.nii.gz"), "pelvis": ("/tmp/data/ts_pelvis_ct.nii.gz", "/tmp/data/ts_pelvis_spine.nii.gz"),
       "chest": ("/tmp/data/popi_ct.nii.gz", "/tmp/data/popi_spine.nii.gz"), "tpt": (f"{T}/sub-ct_label-22_ct.nii.gz", f"{T}/sub-ct_seg-vert_label-22_msk.nii.gz")}
pts = {}
def m(path, d, ct):
    if ct not in pts: pts[ct] = target_points(read_mask(CTS[ct][1], read_ct(CTS[ct][0])))
    r = json.load(open(path)); init = json.load(open(f"{d}/init.json"))
    nominal = NominalView(torch.tensor(init["matrix"], dtype=torch.float64), torch.tensor(init["isocenter_world_mm"], dtype=torch.float64), "nominal")
    c = case_metrics(torch.tensor(r["matrix"], dtype=torch.float64), load_pose(f"{d}/gt.json"), nominal, CArmGeometry.load(f"{d}/geometry.json"), pts[ct])
    return f"{c.mtre_mm:.2f} ({c.paper_translation_mm:.2f})" + (" **miss**" if c.failed else "")
B = "/tmp/s31"
rows = []
for name in ["chest_8", "pelvis_4", "pelvis_9", "sample_0", "sample_3", "sample_9", "tpt_4"]:
    ct, c = name.split("_"); d = f"/tmp/s30/wide/{name}"
    rows.append(f"| wide {ct} {c} | searched | {m(f'{B}/ab_base/{name}_new.json', d, ct)} | {m(f'{B}/ab_c/{name}_new.json', d, ct)} | **{m(f'{B}/cpp_wide/{name}_new.json', d, ct)}** |")
for s, names in ((0, ["chest_5", "chest_7", "tpt_0", "tpt_7"]), (1, ["chest_1", "chest_7", "pelvis_1", "pelvis_8"])):
    for name in names:
        ct, c = name.split("_"); d = f"{B}/paper/s{s}/{name}"
        kind = "searched, then the other polarity kept" if name == "tpt_7" and s == 0 else "kept start"
        rows.append(f"| paper s{s} {ct} {c} | {kind} | **{m(f'{B}/paper_base_s{s}/{name}_new.json', d, ct)}** | {m(f'{B}/paper_new_s{s}/{name}_new.json', d, ct)} | {m(f'{B}/cpp_paper_s{s}/{name}_new.json', d, ct)} |")
print("\n".join(rows))
