"""The global search's first FFT-map call of a whole sopi.register on a case: (images, templates, masks) saved.
Usage: capture.py CT CASE_DIR OUT.pt"""
import sys, pickle, pathlib
import sopi, torch
from sopi.registration import global_search as gs
from sopi.geometry import load_pose
from sopi.io import read_xray
from sopi.cli import _load_geometry
saved = []
orig = gs._FFT_SCORES["masked-ncc"]
def cap(images, templates, masks, *a, **k):
    if len(saved) < 2: saved.append((images.clone(), templates.clone(), masks.clone()))
    if len(saved) == 2:
        torch.save(saved, sys.argv[3]); raise SystemExit
    return orig(images, templates, masks, *a, **k)
gs._FFT_SCORES["masked-ncc"] = cap
d = pathlib.Path(sys.argv[2])
sopi.register(sys.argv[1], read_xray(d / "xray.mha", geometry=_load_geometry(d / "geometry.json")), initial_pose=load_pose(d / "init.json"))
