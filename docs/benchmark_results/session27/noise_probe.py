"""Depth peak of the final similarity through the TRUE pose, realistic paper X-rays, with the draw as is, without
quantum noise, and ideal (no noise, no vendor processing, no hardening, unit weights, no scatter, no blur)."""
import os, sys, dataclasses
sys.path.insert(0, "/work/main/SOPIRegistration")
import sopi
import numpy as np, torch
from sopi.geometry import CArmGeometry, nominal_view
from sopi.io import read_ct, read_mask
from sopi.io_xray import XRay
from sopi.registration.preparation import prepare_fixed
from sopi.registration.problem import PoseProblem, exposed_field
from sopi.render import rendering_volume
from sopi.segment import mask_centroid_world
from sopi.simulate import case_poses, _realism_streams
from sopi.xray_physics import draw_realism, material_volume, simulate_xray, RealismDraw
from sopi.drr import Projector
import functools, sopi.similarity as SIM
from sopi.filters import gaussian_blur
WP = os.environ.get("WP")
def _weighted_patch_ncc(fixed, moving, mask=None, patch_px=9):
    fixed, moving, mask = SIM._batched(fixed, moving, mask)
    pool = lambda image: SIM.box_mean(image, patch_px)
    mean_f, mean_m = pool(fixed), pool(moving)
    covariance = pool(fixed * moving) - mean_f * mean_m
    variance_f = (pool(fixed.square()) - mean_f.square()).clamp(min=0)
    variance_m = (pool(moving.square()) - mean_m.square()).clamp(min=0)
    local = covariance / torch.sqrt(variance_f * variance_m + 1e-12)
    window = pool(mask.to(local)) if mask is not None else torch.ones_like(local)
    strength = {"fixed": variance_f, "moving": variance_m, "both": torch.sqrt(variance_f * variance_m)}[WP.split(":")[0]]
    power = float(WP.split(":")[1]) if ":" in WP else 0.5
    w = window * strength.clamp(min=0) ** power
    return (w * local).sum(dim=(-2, -1)) / w.sum(dim=(-2, -1)).clamp(min=1e-12)
NOISE_W = [None]
if os.environ.get("NW"):
    _k = float(os.environ["NW"])
    def _nw(fixed, moving, mask=None, patch_px=9):
        w = NOISE_W[0]
        mask = mask if w is None else (w if mask is None else mask * w)
        return SIM.gradient_ncc(fixed, moving, mask, patch_px)
    SIM.SIMILARITIES["gradient-ncc"] = _nw
if WP:
    def _wgncc(fixed, moving, mask=None, patch_px=9):
        fixed, moving, mask = SIM._batched(fixed, moving, mask)
        pairs = zip(SIM.image_gradients(fixed), SIM.image_gradients(moving))
        return torch.stack([_weighted_patch_ncc(f, m, mask, int(os.environ.get("PATCH", "9"))) for f, m in pairs]).mean(0)
    SIM.SIMILARITIES["gradient-ncc"] = _wgncc
elif os.environ.get("BLUR") or os.environ.get("PATCH"):
    _sigma = float(os.environ.get("BLUR", "0")); _patch = int(os.environ.get("PATCH", "9"))
    def _blurred(fixed, moving, mask=None, patch_px=9):
        if _sigma > 0:
            fixed, moving = gaussian_blur(fixed, _sigma), gaussian_blur(moving, _sigma)
        return SIM.gradient_ncc(fixed, moving, mask, _patch)
    SIM.SIMILARITIES["gradient-ncc"] = _blurred

ct_path, mask_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
cases = [int(c) for c in sys.argv[4].split(",")] if len(sys.argv) > 4 else list(range(10))
F = int(os.environ.get("F", "2")); M = os.environ.get("M", "gradient-ncc")
ct = read_ct(ct_path); spine = read_mask(mask_path, ct); spine = spine.with_data((spine.data != 0).to(torch.uint8))
geometry = CArmGeometry.preset("perlove-plx118f")
pivot = mask_centroid_world(spine)
nominal = nominal_view("ap", pivot, geometry.source_to_isocenter_mm)
thetas = case_poses(nominal, "paper", 10, seed, None)
realism, noise = _realism_streams(seed)
draws = [draw_realism(realism, geometry) for _ in range(10)]
projector = Projector(material_volume(ct), geometry, step_mm=1.0)
attenuation = rendering_volume(ct, "hu")
start = nominal.pose(torch.zeros(6, dtype=torch.float64)).to(torch.float64)
scan = torch.arange(-6.0, 6.01, 0.5, dtype=torch.float64)
VARIANTS = {
    "asis": lambda d: d,
    "nonoise": lambda d: dataclasses.replace(d, photons=0.0),
    "nn_unsharp": lambda d: dataclasses.replace(d, photons=0.0, gamma=1.0, hardening=0.0, soft_weight=1.0, bone_weight=1.0, scatter_to_primary=0.0, blur_px=0.0),
    "nn_gamma": lambda d: dataclasses.replace(d, photons=0.0, unsharp_amount=0.0, hardening=0.0, soft_weight=1.0, bone_weight=1.0, scatter_to_primary=0.0, blur_px=0.0),
    "nn_material": lambda d: dataclasses.replace(d, photons=0.0, unsharp_amount=0.0, gamma=1.0, scatter_to_primary=0.0, blur_px=0.0),
    "nn_scatter": lambda d: dataclasses.replace(d, photons=0.0, unsharp_amount=0.0, gamma=1.0, hardening=0.0, soft_weight=1.0, bone_weight=1.0, blur_px=0.0),
    "nn_blur": lambda d: dataclasses.replace(d, photons=0.0, unsharp_amount=0.0, gamma=1.0, hardening=0.0, soft_weight=1.0, bone_weight=1.0, scatter_to_primary=0.0),
    "ideal": lambda d: dataclasses.replace(d, photons=0.0, unsharp_amount=0.0, gamma=1.0, hardening=0.0, soft_weight=1.0,
                                           bone_weight=1.0, scatter_to_primary=0.0, blur_px=0.0),
}
wanted = os.environ.get("VARIANTS", "asis,nonoise,ideal").split(",")
out = {v: [] for v in wanted}
for i in cases:
    truth = thetas[i].to(torch.float64)
    line = [f"case {i}"]
    for v in wanted:
        draw = VARIANTS[v](draws[i])
        gen = torch.Generator().manual_seed(1000 * seed + i)
        image = simulate_xray(projector, geometry, nominal.pose(truth), draw, gen)
        fixed, weight, _ = prepare_fixed(XRay(image, geometry), attenuation, start, torch.device("cpu"))
        problem = PoseProblem(attenuation, fixed.image, geometry, start, pivot, mask=spine, xray_weight=weight, exposed=exposed_field(fixed))
        NOISE_W[0] = None
        problem.adapt_to_xray(truth, 4, "gradient-ncc")
        with torch.no_grad():
            direction = problem.depth_direction(truth)
            poses = truth[None] + scan[:, None] * direction[None]
            problem.hold_ct_edges(truth)
            if os.environ.get("NW"):
                level = problem.level(F)
                drr = problem._render(level, truth[None])[0][0]
                inside = drr > 0
                med = drr[inside].median()
                NOISE_W[0] = torch.exp(-_k * (drr - med)).clamp(0.05, 20.0)
                if i == cases[0] and v == wanted[0]: print("drr range", float(drr.max()), float(med), flush=True)
            s = problem.similarity(poses, F, M).numpy()
        b = int(np.argmax(s)); p = scan[b].item()
        if 0 < b < len(s) - 1:
            c = s[b - 1] - 2 * s[b] + s[b + 1]
            if c < 0: p += 0.5 * (s[b - 1] - s[b + 1]) / c * 0.5
        out[v].append(p); line.append(f"{v} {p:+.2f}")
    print(" ".join(line), flush=True)
for v in wanted:
    a = np.array(out[v]); print(v, "median|peak| %.2f" % np.median(abs(a)), "rms %.2f" % np.sqrt((a**2).mean()), "|peak|>2: %d" % (abs(a) > 2).sum())
