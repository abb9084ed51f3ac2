"""Where the global search's time goes in a whole sopi.register on a case (wall seconds per part, calls per part);
then one masked_ncc_maps call on the chest's captured chunk in the same process. Usage: search_split.py CT CASE_DIR"""
"""Where the global search's time goes: wall seconds per part, whole sopi.register on a case (idle machine)."""
import sys, time, json, collections
import sopi
import torch
from sopi.registration import global_search as gs
from sopi.io import read_ct
from sopi.geometry import load_pose
T = collections.Counter(); N = collections.Counter()
INSIDE = [0]
def timed(name, fn):
    def wrap(*a, **k):
        if name == "search renders" and INSIDE[0]: return fn(*a, **k)
        if name.startswith("refinements"): INSIDE[0] += 1
        t = time.perf_counter(); r = fn(*a, **k); T[name] += time.perf_counter() - t; N[name] += 1
        if name.startswith("refinements"): INSIDE[0] -= 1
        return r
    return wrap
gs._FFT_SCORES["masked-ncc"] = timed("fft maps", gs._FFT_SCORES["masked-ncc"])
gs.top_peaks = timed("top_peaks", gs.top_peaks)
gs.gradient_templates = timed("templates", gs.gradient_templates)
gs.image_gradients = timed("drr gradients", gs.image_gradients)
orig_in_view = gs.SpineMaps.in_view_only
gs.SpineMaps.in_view_only = timed("spine in view", orig_in_view)
orig_ap = gs.PoseProblem.attenuation_projector
def ap(self, *a, **k):
    p = orig_ap(self, *a, **k)
    if len(a) < 3: return p
    class Proxy:
        def __getattr__(self, name): return getattr(p, name)
        __call__ = staticmethod(timed("search renders", p))
    return Proxy()
gs.PoseProblem.attenuation_projector = ap
orig_refiner = gs._refiner
def refiner(*a, **k):
    r = orig_refiner(*a, **k)
    return timed("refinements (incl. start)", r)
gs._refiner = refiner
gs.assess = timed("judge", gs.assess)
gs.global_search = timed("global search total", gs.global_search)
import sopi.registration.api as api
api.global_search = gs.global_search
ct, case = sys.argv[1], sys.argv[2]
t = time.perf_counter()
from sopi.io import read_xray
import pathlib
d = pathlib.Path(case)
from sopi.cli import _load_geometry
xray = read_xray(d / "xray.mha", geometry=_load_geometry(d / "geometry.json"))
res = sopi.register(ct, xray, initial_pose=load_pose(d / "init.json"))
T["register"] = time.perf_counter() - t
print(json.dumps({k: round(v, 2) for k, v in T.items()}), json.dumps(dict(N)))
from sopi import template_matching as tm
images, templates, masks = torch.load("/tmp/s30/chest_maps.pt")[0]
t = time.perf_counter()
for _ in range(5): tm.masked_ncc_maps(images, templates, masks)
print("after, per call", (time.perf_counter() - t) / 5, torch.get_num_threads())
