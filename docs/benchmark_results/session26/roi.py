import sys, csv, os
sys.path.insert(0, "/work/main/SOPIRegistration")
import sopi, torch
from sopi.filters import dilate
from sopi.geometry import CArmGeometry, nominal_view
from sopi.io import read_ct, read_mask
from sopi.io_xray import XRay
from sopi.registration.preparation import prepare_fixed
from sopi.registration.problem import PoseProblem, exposed_field
from sopi.render import rendering_volume
from sopi.segment import mask_centroid_world
from sopi.simulate import simulate_cases
P = ("rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm")
ct = read_ct(sys.argv[1]); spine = read_mask(sys.argv[2], ct); spine = spine.with_data((spine.data != 0).to(torch.uint8))
geometry = CArmGeometry.preset("perlove-plx118f"); pivot = mask_centroid_world(spine)
nominal = nominal_view("ap", pivot, geometry.source_to_isocenter_mm)
rows = [r for r in csv.DictReader(open(sys.argv[3] + "/results.csv")) if r["method"] == "global+opt"]
_, images, _ = simulate_cases(ct, nominal, geometry, "paper", 10, int(os.environ.get("SEED", 0)), True, "cpu", spine=spine)
att = rendering_volume(ct, "hu"); start = nominal.pose(torch.zeros(6, dtype=torch.float64)).to(torch.float64)
for r in rows[:5]:
    est = torch.tensor([float(r["est_" + k]) for k in P], dtype=torch.float64)
    fixed, weight, _ = prepare_fixed(XRay(images[int(r["case"])], geometry), att, start, torch.device("cpu"))
    pr = PoseProblem(att, fixed.image, geometry, start, pivot, mask=spine, xray_weight=weight, exposed=exposed_field(fixed))
    level = pr.level(1)
    with torch.no_grad():
        _, proj = pr._render(level, est.reshape(1, 6))
    w = dilate(proj > 0, pr.mask_dilation_px)[0].float()
    if level.weight is not None: w = w * (level.weight > 0)
    nz = torch.nonzero(w)
    r0, r1, c0, c1 = int(nz[:, 0].min()), int(nz[:, 0].max()), int(nz[:, 1].min()), int(nz[:, 1].max())
    print(r["case"], "weighted %.2f of pixels; box rows %d-%d cols %d-%d = %.2f of area" % (float(w.mean()), r0, r1, c0, c1, (r1 - r0 + 1) * (c1 - c0 + 1) / w.numel()), "dilation", pr.mask_dilation_px)
