"""One evaluation of the patch score (forward and backward) at 1/2 and 1/1, with and without the window and a held
spine region, on a clean DRR X-ray: python eval_cost.py CT MASK (T=threads)."""
import sys, time, os
sys.path.insert(0, "/work/main/SOPIRegistration")
import sopi, torch
from sopi.geometry import CArmGeometry, nominal_view
from sopi.io import read_ct, read_mask
from sopi.render import rendering_volume, render_drr
from sopi.segment import mask_centroid_world
from sopi.registration.problem import PoseProblem
torch.set_num_threads(int(os.environ.get("T", 1)))
ct = read_ct(sys.argv[1]); spine = read_mask(sys.argv[2], ct); spine = spine.with_data((spine.data != 0).to(torch.uint8))
G = CArmGeometry.preset("perlove-plx118f"); pivot = mask_centroid_world(spine)
nominal = nominal_view("ap", pivot, G.source_to_isocenter_mm)
att = rendering_volume(ct, "hu"); start = nominal.pose(torch.zeros(6, dtype=torch.float64)).to(torch.float64)
truth = torch.tensor([1.0, -1.0, 2.0, 3.0, -2.0, 5.0], dtype=torch.float64)
image = render_drr(att, G, nominal.pose(truth))
pr = PoseProblem(att, image, G, start, pivot, mask=spine)
pr.scatter_to_primary = 1.0
print("separate mask", pr.projectors.separate_mask(pr.volume, pr.mask))
pr.hold_ct_edges(truth)
for factor, win, held in [(2, 0, 0), (1, 0, 0), (1, 1, 0), (1, 1, 1)]:
    pr.hold_window(truth if win else None, factor); pr.hold_region(truth if held else None)
    th = truth.clone().reshape(1, 6).requires_grad_(True)
    ts = []
    for i in range(4):
        t = time.time(); s = pr.similarity(th, factor, "gradient-ncc"); t1 = time.time(); s.sum().backward(); t2 = time.time()
        if i: ts.append((t1 - t, t2 - t1))
    print("level 1 /", factor, "window", win, "held region", held, "shape", tuple(pr.level(factor).fixed.shape), "fwd %.3f bwd %.3f" % tuple(sum(x[k] for x in ts) / len(ts) for k in (0, 1)), "score", float(s.detach()))
