"""Block bootstrap of the depth peak through the true pose: does its spread predict the peak's offset?"""
import os, sys, dataclasses, math
sys.path.insert(0, "/work/main/SOPIRegistration")
import sopi
import numpy as np, torch
import sopi.similarity as SIM
from sopi.geometry import CArmGeometry, nominal_view
from sopi.io import read_ct, read_mask
from sopi.io_xray import XRay
from sopi.registration.preparation import prepare_fixed
from sopi.registration.problem import PoseProblem, exposed_field
from sopi.render import rendering_volume
from sopi.segment import mask_centroid_world
from sopi.simulate import case_poses, _realism_streams
from sopi.xray_physics import draw_realism, material_volume, simulate_xray
from sopi.drr import Projector

STASH = {}
def _patch_maps(fixed, moving, mask, patch_px=9):
    pool = lambda image: SIM.box_mean(image, patch_px)
    mean_f, mean_m = pool(fixed), pool(moving)
    cov = pool(fixed * moving) - mean_f * mean_m
    vf = (pool(fixed.square()) - mean_f.square()).clamp(min=0)
    vm = (pool(moving.square()) - mean_m.square()).clamp(min=0)
    local = cov / torch.sqrt(vf * vm + 1e-12)
    ww = pool(mask.to(local)) if mask is not None else torch.ones_like(local)
    return ww * local, ww
def _gncc(fixed, moving, mask=None, patch_px=9):
    fixed, moving, mask = SIM._batched(fixed, moving, mask)
    num, den = 0, 0
    for f, m in zip(SIM.image_gradients(fixed), SIM.image_gradients(moving)):
        n, d = _patch_maps(f, m, mask.expand_as(m) if mask is not None else None, patch_px)
        num, den = num + n / 2, d
    STASH["num"], STASH["den"] = num, den
    return num.sum(dim=(-2, -1)) / den.sum(dim=(-2, -1)).clamp(min=1e-12)
SIM.SIMILARITIES["gradient-ncc"] = _gncc

def peak(s, scan):
    b = int(np.argmax(s)); p = scan[b]
    if 0 < b < len(s) - 1:
        c = s[b - 1] - 2 * s[b] + s[b + 1]
        if c < 0: p += 0.5 * (s[b - 1] - s[b + 1]) / c * (scan[1] - scan[0])
    return p

ct_path, mask_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
BLOCK = int(os.environ.get("BLOCK", "16")); B = 64
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
scan = np.arange(-6.0, 6.01, 0.5)
rng = np.random.default_rng(0)
for i in range(10):
    truth = thetas[i].to(torch.float64)
    image = simulate_xray(projector, geometry, nominal.pose(truth), draws[i], torch.Generator().manual_seed(1000 * seed + i))
    fixed, weight, _ = prepare_fixed(XRay(image, geometry), attenuation, start, torch.device("cpu"))
    problem = PoseProblem(attenuation, fixed.image, geometry, start, pivot, mask=spine, xray_weight=weight, exposed=exposed_field(fixed))
    problem.adapt_to_xray(truth, 4, "gradient-ncc")
    with torch.no_grad():
        direction = problem.depth_direction(truth)
        poses = truth[None] + torch.tensor(scan)[:, None] * direction[None]
        problem.hold_ct_edges(truth)
        s = problem.similarity(poses, 2, "gradient-ncc").numpy()
    num, den = STASH["num"].double(), STASH["den"].double()  # (S, H, W)
    S, H, W = num.shape
    hb, wb = -(-H // BLOCK), -(-W // BLOCK)
    pad = (0, wb * BLOCK - W, 0, hb * BLOCK - H)
    nb = torch.nn.functional.pad(num, pad).reshape(S, hb, BLOCK, wb, BLOCK).sum((2, 4)).reshape(S, -1).numpy()
    db = torch.nn.functional.pad(den.expand(S, H, W), pad).reshape(S, hb, BLOCK, wb, BLOCK).sum((2, 4)).reshape(S, -1).numpy()
    used = db[0] > 0
    nb, db = nb[:, used], db[:, used]
    k = nb.shape[1]
    peaks = []
    for _ in range(B):
        counts = rng.multinomial(k, np.ones(k) / k)
        peaks.append(peak((nb * counts).sum(1) / (db * counts).sum(1), scan))
    p0 = peak(s, scan)
    print(f"case {i} peak {p0:+.2f} boot_sd {np.std(peaks):.2f} blocks {k}", flush=True)
