"""gradient-ncc@2 (and gc@2) at the registered pose vs at the true pose, on a realistic benchmark folder."""
import sys, csv, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "SOPIRegistration"))
import sopi
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
_, images, _ = simulate_cases(ct, nominal, geometry, "paper", 10, 0, True, "cpu", spine=spine)
att = rendering_volume(ct, "hu"); start = nominal.pose(torch.zeros(6, dtype=torch.float64)).to(torch.float64)
for r in rows:
    est = torch.tensor([float(r["est_" + k]) for k in P], dtype=torch.float64); tru = torch.tensor([float(r["true_" + k]) for k in P], dtype=torch.float64)
    fixed, weight, _ = prepare_fixed(XRay(images[int(r["case"])], geometry), att, start, torch.device("cpu"))
    pr = PoseProblem(att, fixed.image, geometry, start, pivot, mask=spine, xray_weight=weight, exposed=exposed_field(fixed))
    pr.adapt_to_xray(est, 4, "gradient-ncc")
    with torch.no_grad():
        pr.hold_ct_edges(est)
        g = pr.similarity(torch.stack([est, tru]), 2, "gradient-ncc").tolist()
        c = pr.similarity(torch.stack([est, tru]), 2, "gc").tolist()
        pr.hold_ct_edges(None)
    print(f"case {r['case']} mTRE {float(r['mtre_mm']):5.2f}  gncc@2 result {g[0]:.4f} truth {g[1]:.4f} ({'truth' if g[1] > g[0] else 'result'} higher)   gc@2 result {c[0]:.4f} truth {c[1]:.4f}", flush=True)
