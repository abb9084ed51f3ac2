"""The polarity judgement's edge lean with every placement, and with placements across the body (columns) limited to
half the detector: window.py DIR..."""
import sys, json, torch
from pathlib import Path
from sopi.io import read_ct
from sopi.io_xray import read_xray, resize_image
from sopi.geometry import load_pose
from sopi.render import rendering_volume, render_drr
from sopi.registration import preparation as P
from sopi.similarity import image_gradients
from sopi.template_matching import masked_ncc_maps
from sopi.xray_prep import prepare_xray, readings
from sopi.registration.global_search import gradient_templates
torch.set_num_threads(1)
cache = {}
for d in sys.argv[1:]:
    for case in sorted(Path(d).glob("case_*"), key=lambda p: int(p.name.split("_")[1])):
        gt = json.loads((case / "gt.json").read_text()); chain = json.loads((case / "chain.json").read_text())
        if gt["ct"] not in cache:
            cache[gt["ct"]] = rendering_volume(read_ct(gt["ct"]))
        att = cache[gt["ct"]]
        x = read_xray(case / "xray.mha"); pose = load_pose(case / "init.json")
        rows, cols = x.geometry.shape
        scale = max(1, round(max(rows, cols) / P._POLARITY_PX)); small = (-(-rows // scale), -(-cols // scale))
        working = x.geometry.resized(*small)
        gc_, gr_ = (P._POLARITY_EXTENT - 1) * working.cols // 2, (P._POLARITY_EXTENT - 1) * working.rows // 2
        drr = render_drr(att, working.padded(gc_, gr_, gc_, gr_), pose, step_mm=3.0)
        options = readings(x.image)
        w = torch.stack([prepare_xray(r, x.field_mask).weight for r in options.values()]).amin(0)
        weight = resize_image(w, working.shape)
        gx, gy = image_gradients(drr.to(torch.float32)[None]); dg = torch.stack([gx, gy], 1)
        full, limited = {}, {}
        turns = P._GRADIENT_TURNS
        for name, r in options.items():
            t, m = gradient_templates(resize_image(r, working.shape), weight, working, [(turn, 1.0) for turn in turns])
            maps = masked_ncc_maps(dg, t, m)
            maps = maps.reshape(-1, *maps.shape[-2:])
            H, W = maps.shape[-2:]
            cols_off = torch.arange(W, dtype=torch.float32) - (W - 1) / 2
            full[name] = float(maps.max())
            limited[name] = float(maps[..., cols_off.abs() <= working.cols / 2].max())
        def lean(s):
            others = max(v for k, v in s.items() if k != "bone-bright"); return others - s["bone-bright"]
        print(f"{d.split('/')[-1]} {case.name} {chain['output']:7s} lean all {lean(full):+.3f} limited {lean(limited):+.3f}", flush=True)
