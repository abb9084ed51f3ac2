"""Edge scores of every realistic benchmark X-ray (bone bright): margins.py CT MASK protocols seeds cases"""
import sys, torch
sys.path.insert(0, "benchmarks")
from benchmark_cases import Scene
from sopi.io_xray import XRay
from sopi.render import rendering_volume
from sopi.registration.preparation import prepare_fixed
torch.set_num_threads(1)
scene = Scene.read(sys.argv[1], sys.argv[2]); att = rendering_volume(scene.ct, "hu")
for protocol in sys.argv[3].split(","):
    for seed in (int(s) for s in sys.argv[4].split(",")):
        _, images, _ = scene.cases(protocol, int(sys.argv[5]), seed, True)
        for i, im in enumerate(images):
            _, _, record = prepare_fixed(XRay(im, scene.geometry), att, scene.nominal.camera_from_world, torch.device("cpu"))
            e = record["polarity_scores_edges"]
            m = max(v for k, v in e.items() if k != "bone-bright") - e["bone-bright"]
            print("M", sys.argv[1].split('/')[-1], protocol, seed, i, record["polarity"], round(m, 3), e, flush=True)
