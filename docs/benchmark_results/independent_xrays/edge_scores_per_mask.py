"""scores of every reading under every reading's own mask. g4.py ind CT CASE... | g4.py own CT MASK protocol n"""
import sys, json, torch
from sopi.io import read_ct, read_xray
from sopi.io_xray import XRay, resize_image
from sopi.geometry import load_pose
from sopi.render import render_drr, rendering_volume
from sopi.registration.preparation import _POLARITY_PX, _POLARITY_EXTENT, _GRADIENT_TURNS
from sopi.registration.global_search import gradient_templates
from sopi.similarity import image_gradients
from sopi.template_matching import masked_ncc_maps
from sopi.xray_prep import prepare_xray, readings
torch.set_num_threads(1)
def table(xray, att, pose):
    rows, cols = xray.geometry.shape
    scale = max(1, round(max(rows, cols) / _POLARITY_PX)); small = (-(-rows // scale), -(-cols // scale))
    working = xray.geometry.resized(*small)
    g_c, g_r = (_POLARITY_EXTENT - 1) * working.cols // 2, (_POLARITY_EXTENT - 1) * working.rows // 2
    drr = render_drr(att, working.padded(g_c, g_r, g_c, g_r), pose, step_mm=3.0, device="cpu")
    gx, gy = image_gradients(drr.float()[None]); dg = torch.stack([gx, gy], 1)
    opts = readings(xray.image)
    masks = {n: prepare_xray(r, xray.field_mask).weight for n, r in opts.items()}
    masks["common"] = torch.stack(list(masks.values())).amin(0)
    out = {}
    for mn, m in masks.items():
        w = resize_image(m, small)
        out[mn] = {}
        for n, r in opts.items():
            t, mm = gradient_templates(resize_image(r, small), w, working, [(a, 1.0) for a in _GRADIENT_TURNS])
            out[mn][n] = round(float(masked_ncc_maps(dg, t, mm).max()), 3)
        out[mn]["used"] = round(float((m > 0.5).float().mean()), 2)
    return out
if sys.argv[1] == "ind":
    ct = read_ct(sys.argv[2]); att = rendering_volume(ct, "hu")
    for case in sys.argv[3:]:
        chain = json.load(open(f"{case}/chain.json")); truth = "bone-dark" if chain["output"] == "display" else "bone-bright"
        x = read_xray(f"{case}/xray.mha")
        print(case.split('/')[-2], case.split('/')[-1], truth, json.dumps(table(x, att, load_pose(f"{case}/init.json"))), flush=True)
else:
    sys.path.insert(0, "benchmarks")
    from benchmark_cases import Scene
    scene = Scene.read(sys.argv[2], sys.argv[3]); att = rendering_volume(scene.ct, "hu")
    _, images, _ = scene.cases(sys.argv[4], int(sys.argv[5]), 0, True)
    for i, im in enumerate(images):
        for rn, make, truth in (("as-is", lambda a: a, "bone-bright"), ("inverted", lambda a: a.max() - a, "bone-dark")):
            print(sys.argv[2].split('/')[-1][:10], sys.argv[4], i, rn, truth, json.dumps(table(XRay(make(im), scene.geometry), att, scene.nominal.camera_from_world)), flush=True)
