"""The realistic benchmark X-rays where the old coarse rule and the landed rule decide differently: olddiff.py CT MASK"""
import sys, torch
sys.path.insert(0, "benchmarks")
from benchmark_cases import Scene
from sopi.io_xray import XRay
from sopi.render import rendering_volume
from sopi.registration.preparation import _agreed, _decide, _polarity_scores, _reading
torch.set_num_threads(1)
scene = Scene.read(sys.argv[1], sys.argv[2]); att = rendering_volume(scene.ct, "hu")
n = differ = 0
for protocol in ("paper", "wide", "far"):
    for seed in (0, 1):
        _, images, _ = scene.cases(protocol, 10, seed, True)
        for i, im in enumerate(images):
            j = _polarity_scores(XRay(im, scene.geometry), att, scene.nominal.camera_from_world, torch.device("cpu"))
            old, new = _agreed([_decide([j.fills]), _decide([j.field_masked])]), _reading([j])
            n += 1
            if old != new:
                differ += 1
                print("DIFFER", protocol, seed, i, old, new, flush=True)
print(sys.argv[1].split('/')[-1], ":", differ, "of", n, "decided differently", flush=True)
