"""Masks of prepare_xray against the chain's truth on DiffDRR cases: masks.py DIR..."""
import sys, json, math, numpy as np, torch
from pathlib import Path
from sopi.io_xray import read_xray
from sopi.xray_prep import prepare_xray, apply_reading

def truth(chain, rows, cols, pixel_mm):
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    field = np.ones((rows, cols), bool)
    radius = chain["field_radius"] * min(rows, cols) / 2
    field[(yy - (rows - 1) / 2) ** 2 + (xx - (cols - 1) / 2) ** 2 > radius**2] = False
    for blade in chain["blades"]:
        turn = math.radians(blade["turn_deg"])
        u, v = (xx - (cols - 1) / 2) / cols, (yy - (rows - 1) / 2) / rows
        c = (u * math.cos(turn) + v * math.sin(turn)) if blade["axis"] == 0 else (v * math.cos(turn) - u * math.sin(turn))
        field[c * blade["side"] > 0.5 - blade["fraction"]] = False
    tools = np.zeros((rows, cols), bool)
    for tool in chain["instruments"]:
        cy, cx = tool["centre"][0] * rows, tool["centre"][1] * cols
        a = math.radians(tool["angle_deg"])
        along = (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)
        across = -(xx - cx) * math.sin(a) + (yy - cy) * math.cos(a)
        tools |= (np.abs(along) <= tool["length_mm"] / pixel_mm / 2) & (np.abs(across) <= tool["width_mm"] / pixel_mm / 2)
    return field, tools

print("case output reading | outside kept (of outside) | tool px kept (of tool px) | usable masked (of usable)")
for d in sys.argv[1:]:
    for case in sorted(Path(d).glob("case_*"), key=lambda p: int(p.name.split("_")[1])):
        chain = json.loads((case / "chain.json").read_text())
        x = read_xray(case / "xray.mha")
        rows, cols = x.image.shape
        field, tools = truth(chain, rows, cols, x.geometry.pixel_spacing_mm[0] if hasattr(x.geometry, "pixel_spacing_mm") else 1.0)
        reading = "bone-bright" if chain["output"] == "log" else "intensity"
        p = prepare_xray(apply_reading(torch.as_tensor(x.image), reading))
        w = p.weight.numpy() > 0
        out_kept = (w & ~field).sum() / max(1, (~field).sum())
        t = tools & field
        tool_kept = (w & t).sum() / max(1, t.sum())
        usable = field & ~tools
        over = (~w & usable).sum() / max(1, usable.sum())
        print(f"{d.split('/')[-1]} {case.name} {chain['output']:7s} {len(chain['instruments'])} tools {len(chain['blades'])} blades | {out_kept:.3f} | {tool_kept:.3f} | {over:.3f}", flush=True)
