"""Which realistic benchmark X-rays (bone bright, as sopi benchmark makes them) prepare_fixed re-reads: reread.py CT MASK protocol seeds cases"""
import sys, torch
sys.path.insert(0, "benchmarks")
from benchmark_cases import Scene
from sopi.io_xray import XRay
from sopi.render import rendering_volume
from sopi.registration.preparation import prepare_fixed
torch.set_num_threads(1)
scene = Scene.read(sys.argv[1], sys.argv[2]); att = rendering_volume(scene.ct, "hu")
n = reread = 0
for protocol in sys.argv[3].split(","):
    for seed in (int(s) for s in sys.argv[4].split(",")):
        _, images, _ = scene.cases(protocol, int(sys.argv[5]), seed, True)
        for i, im in enumerate(images):
            _, _, record = prepare_fixed(XRay(im, scene.geometry), att, scene.nominal.camera_from_world, torch.device("cpu"))
            n += 1
            if record["polarity"] != "bone-bright":
                reread += 1
                print("RE-READ", sys.argv[1].split('/')[-1], protocol, seed, i, record["polarity"], record["polarity_scores_edges"], record["polarity_scores"], record["polarity_scores_field_masked"], flush=True)
print(sys.argv[1].split('/')[-1], sys.argv[3], "seeds", sys.argv[4], ":", reread, "of", n, "re-read", flush=True)
