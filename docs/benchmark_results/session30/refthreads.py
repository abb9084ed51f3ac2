"""Eight hypothesis refinements (the search's refine) one after another with two torch threads, side by side in two
single-threaded workers (sopi.torch_workers.side_by_side), and one after another with one thread. Usage: refthreads.py CT CASE_DIR"""
import sys, pathlib, time, torch
import sopi
from sopi.registration import global_search as gs
import sopi.registration.api as api
from sopi.torch_workers import side_by_side
from sopi.geometry import load_pose
from sopi.io import read_xray
from sopi.cli import _load_geometry
box = {}
def grab(problem, stage, *a, **k):
    box["p"] = problem; box["s"] = stage; raise SystemExit
api.global_search = grab
d = pathlib.Path(sys.argv[2])
try:
    sopi.register(sys.argv[1], read_xray(d / "xray.mha", geometry=_load_geometry(d / "geometry.json")), initial_pose=load_pose(d / "init.json"))
except SystemExit:
    pass
p, stage = box["p"], box["s"]
refine = gs._refiner(p, stage, 0, None)
g = torch.Generator().manual_seed(0)
thetas = [torch.randn(6, generator=g, dtype=torch.float64) * 5 for _ in range(8)]
t = time.perf_counter(); refine(thetas[0], 0); print("first refine", round(time.perf_counter() - t, 2)); t = time.perf_counter(); refine(thetas[1], 0); print("second refine", round(time.perf_counter() - t, 2))
t = time.perf_counter(); seq = [refine(th, i + 1) for i, th in enumerate(thetas)]; t1 = time.perf_counter() - t
t = time.perf_counter(); par = side_by_side(lambda i: refine(thetas[i], i + 1), range(8)); t2 = time.perf_counter() - t
torch.set_num_threads(1)
t = time.perf_counter(); one = [refine(th, i + 1) for i, th in enumerate(thetas)]; t3 = time.perf_counter() - t
print("sequential 2 threads", round(t1, 2), "side by side", round(t2, 2), "sequential 1 thread", round(t3, 2))
print("par == one thread", all(torch.equal(a.theta, b.theta) for a, b in zip(par, one)), "par == seq", all(torch.equal(a.theta, b.theta) for a, b in zip(par, seq)))
