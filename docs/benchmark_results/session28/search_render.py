"""Time the global search's renders on a CT: full working volume against block-averaged copies."""
import sys, time
import sopi
import torch
from sopi.registration import problem as P
from sopi import render
from sopi.drr import Projector
captured = {}
orig = P.PoseProblem.attenuation_projector
def spy(self, geometry, step_mm):
    if captured.get("search") is geometry and "geometry" not in captured:
        captured.update(geometry=geometry, step=step_mm, volume=self.volume, problem=self)
    return orig(self, geometry, step_mm)
P.PoseProblem.attenuation_projector = spy
from sopi.registration import global_search as G
orig_sd = G._search_detector
def spy_sd(problem, small, max_extent):
    g = orig_sd(problem, small, max_extent)
    captured["search"] = g
    return g
G._search_detector = spy_sd
from sopi.cli import main
d = sys.argv[2]
try:
    main(["--progress", "none", "register", "--ct", sys.argv[1], "--xray", f"{d}/xray.mha", "--geometry", f"{d}/geometry.json", "--init", f"{d}/init.json", "--out", "/tmp/s28/tmp.json"])
except SystemExit:
    pass
g, step, vol, prob = captured["geometry"], captured["step"], captured["volume"], captured["problem"]
print("search detector", g.rows, g.cols, "step", step, "volume", tuple(vol.data.shape), vol.spacing)
theta = torch.zeros(8, 6, dtype=torch.float64); theta[:, 0] = torch.linspace(-30, 30, 8); theta[:, 1] = torch.linspace(-20, 20, 8)
poses = prob.pose(theta)
ref = None
for factors in [(1, 1, 1), (2, 2, 1), (2, 2, 2), (4, 4, 2)]:
    v = render.binned_volume(vol, factors)
    proj = Projector(v, g, step_mm=step)
    with torch.no_grad():
        proj(poses[:1])
        t = time.perf_counter()
        for _ in range(3):
            out = proj(poses)
        dt = (time.perf_counter() - t) / 3
    if ref is None:
        ref = out
    x, y = out.flatten(1), ref.flatten(1)
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    ncc = float(((x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))).min())
    print(factors, "%.1f ms per DRR" % (dt / 8 * 1000), "min NCC vs full %.5f" % ncc, tuple(v.data.shape))
