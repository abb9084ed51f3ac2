"""Probe: the FFT search's unrefined hypotheses (hits mode of benchmarks/global_search_diagnostics.py) with the
gradients as they are against gradients soft-normalised to unit length (orientation correlation)."""
import sys, json, argparse
from dataclasses import replace
sys.path.insert(0, "/work/main/SOPIRegistration"); sys.path.insert(0, "/work/main/benchmarks")
import sopi  # noqa
import torch
import sopi.registration.global_search as gs
from sopi.benchmark import case_metrics
from sopi.io_xray import XRay
from sopi.registration.global_search import GlobalStage, global_search
from sopi.registration.optimizers import Monitor, OptimizerResult
from sopi.registration.preparation import prepare_fixed
from sopi.registration.problem import PoseProblem, exposed_field
from sopi.render import rendering_volume
from sopi.segment import mask_centroid_world
from sopi.similarity import image_gradients as plain_gradients
from benchmark_cases import simulated

p = argparse.ArgumentParser()
p.add_argument("ct"); p.add_argument("mask"); p.add_argument("--protocol", default="wide"); p.add_argument("--seed", type=int, default=0)
p.add_argument("--cases", type=int, default=10); p.add_argument("--variants", default="base,orient1"); p.add_argument("--out")
p.add_argument("--hyp", type=int, default=12)
a = p.parse_args()

def normalised(factor, power=1.0):
    def grads(image):
        gx, gy = plain_gradients(image)
        mag = torch.sqrt(gx * gx + gy * gy)
        flat = mag.flatten(1)
        eps = torch.stack([row[row > 0].median() if (row > 0).any() else row.new_tensor(1.0) for row in flat]) * factor
        scale = 1.0 / torch.sqrt(mag * mag + eps[:, None, None] ** 2) ** power
        return gx * scale, gy * scale
    return grads

MODE = {"template": False}
orig_gt = gs.gradient_templates
def gt_wrapped(*args, **kw):
    MODE["template"] = True
    try:
        return orig_gt(*args, **kw)
    finally:
        MODE["template"] = False
gs.gradient_templates = gt_wrapped
def only(fn, template):
    return lambda image: fn(image) if MODE["template"] == template else plain_gradients(image)
variants = {"base": plain_gradients}
for v in a.variants.split(","):
    if v.startswith("orient"):
        variants[v] = normalised(float(v[6:] or 1))
    elif v.startswith("torient"):
        variants[v] = only(normalised(float(v[7:] or 1)), True)
    elif v.startswith("dorient"):
        variants[v] = only(normalised(float(v[7:] or 1)), False)
cases = simulated(a.ct, a.mask, a.protocol, a.cases, a.seed, True)
attenuation = rendering_volume(cases.ct, "hu")
binary = cases.spine.with_data((cases.spine.data != 0).to(torch.uint8))
rows = []
original = gs.cma_es
gs.cma_es = lambda loss, start, *rest, **o: OptimizerResult(start, 0.0, 1, 1, True)
for i, theta in enumerate(cases.thetas):
    fixed, weight, _ = prepare_fixed(XRay(cases.images[i], cases.geometry), attenuation, cases.nominal.camera_from_world, torch.device("cpu"))
    problem = PoseProblem(attenuation, fixed.image, cases.geometry, cases.nominal.camera_from_world, mask_centroid_world(binary),
                          mask=binary, xray_weight=weight, exposed=exposed_field(fixed))
    truth = cases.nominal.pose(theta)
    row = {"case": i, "theta": [round(float(x), 1) for x in theta]}
    for name, fn in variants.items():
        if name not in a.variants.split(","):
            continue
        gs.image_gradients = fn
        stage = replace(GlobalStage(), accept_start_above=None, hypotheses=a.hyp, gradient_floor=None)  # the probe patches the gradients itself
        out = global_search(problem, stage, Monitor(None, None), a.seed + i)
        row[name] = [round(case_metrics(problem.pose(t), truth, cases.nominal, cases.geometry, cases.points).mtre_mm, 1) for t, _ in out.hypotheses]
    gs.image_gradients = plain_gradients
    rows.append(row)
    print(json.dumps(row), flush=True)
if a.out:
    open(a.out, "w").write(json.dumps(rows))
