"""Where gradient-ncc@2 peaks along depth through the TRUE pose, clean paper X-rays; variants of the fixed image."""
import sys, json, os
import numpy as np, torch
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
from sopi.drr import Projector
import torch.nn.functional as F
import functools, sopi.similarity as SIM
if os.environ.get("PATCH"):
    SIM.SIMILARITIES["gradient-ncc"] = functools.partial(SIM.gradient_ncc, patch_px=int(os.environ["PATCH"]))

ct_path, mask_path, realistic = sys.argv[1], sys.argv[2], sys.argv[3] == "realistic"
variant = sys.argv[4] if len(sys.argv) > 4 else "plain"
ncases = 10
ct = read_ct(ct_path); spine = read_mask(mask_path, ct); spine = spine.with_data((spine.data != 0).to(torch.uint8))
geometry = CArmGeometry.preset("perlove-plx118f")
pivot = mask_centroid_world(spine)
nominal = nominal_view("ap", pivot, geometry.source_to_isocenter_mm)
thetas, images, _ = simulate_cases(ct, nominal, geometry, "paper", ncases, 0, realistic, "cpu", spine=spine)
attenuation = rendering_volume(ct, "hu")
start = nominal.pose(torch.zeros(6, dtype=torch.float64)).to(torch.float64)
scan = torch.arange(-6.0, 6.01, 0.5, dtype=torch.float64)
peaks = []
for i in range(ncases):
    truth = thetas[i].to(torch.float64)
    image = images[i]
    fixed, weight, _ = prepare_fixed(XRay(image, geometry), attenuation, start, torch.device("cpu"))
    problem = PoseProblem(attenuation, fixed.image, geometry, start, pivot, mask=spine, xray_weight=weight, exposed=exposed_field(fixed))
    if variant == "level":  # the X-ray rendered exactly as the 1/2 level renders
        level = problem.level(2)
        with torch.no_grad():
            drr = problem._render(truth[None], 2)
    problem.adapt_to_xray(truth, 4, "gradient-ncc")
    with torch.no_grad():
        direction = problem.depth_direction(truth)
        poses = truth[None] + scan[:, None] * direction[None]
        problem.hold_ct_edges(truth)
        s = problem.similarity(poses, int(__import__("os").environ.get("F", "2")), os.environ.get("M", "gradient-ncc")).numpy()
    b = int(np.argmax(s))
    p = scan[b].item()
    if 0 < b < len(s) - 1:
        c = s[b-1] - 2*s[b] + s[b+1]
        if c < 0: p += 0.5 * (s[b-1] - s[b+1]) / c * 0.5
    peaks.append(p)
    print(i, f"peak {p:+.2f} mm", flush=True)
print("median peak", np.median(peaks), "mean", np.mean(peaks), "abs<3", sum(abs(x) < 3 for x in peaks))
