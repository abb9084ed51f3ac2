"""Where each reading's edges match the DRR best (the polarity judgement's search): placements.py CASE"""
import sys, json, torch
from sopi.io import read_ct
from sopi.io_xray import read_xray, resize_image
from sopi.geometry import load_pose
from sopi.render import rendering_volume, render_drr
from sopi.registration import preparation as P
from sopi.similarity import image_gradients
from sopi.template_matching import masked_ncc_maps
from sopi.xray_prep import prepare_xray, readings
from sopi.registration.global_search import gradient_templates
case = sys.argv[1]
gt = json.load(open(f"{case}/gt.json")); ct = read_ct(gt["ct"]); att = rendering_volume(ct)
x = read_xray(f"{case}/xray.mha")
for label, pose in (("start", load_pose(f"{case}/init.json")),):
    rows, cols = x.geometry.shape
    scale = max(1, round(max(rows, cols) / P._POLARITY_PX)); small = (-(-rows // scale), -(-cols // scale))
    working = x.geometry.resized(*small)
    g = (P._POLARITY_EXTENT - 1) * working.cols // 2
    drr = render_drr(att, working.padded(g, g, g, g), pose, step_mm=3.0)
    options = readings(x.image)
    w = torch.stack([prepare_xray(r, x.field_mask).weight for r in options.values()]).amin(0)
    weight = resize_image(w, working.shape)
    gx, gy = image_gradients(drr.to(torch.float32)[None]); dg = torch.stack([gx, gy], 1)
    for name, r in options.items():
        turns = P._GRADIENT_TURNS
        t, m = gradient_templates(resize_image(r, working.shape), weight, working, [(turn, 1.0) for turn in turns])
        allmaps = masked_ncc_maps(dg, t, m).reshape(len(turns), *masked_ncc_maps(dg, t, m).shape[-2:])
        k = int(allmaps.reshape(len(turns), -1).max(1).values.argmax()); maps = allmaps[k]
        best = int(maps.argmax()); H, W = maps.shape[-2:]
        iy, ix = divmod(best, W)
        centre = ((H - 1) / 2, (W - 1) / 2)
        print(label, name, "turn", turns[k], "score %.3f" % float(maps.max()), "offset px (rows, cols) from centred:", iy - centre[0], ix - centre[1], "px mm %.2f" % working.pixel_spacing_mm[0])
