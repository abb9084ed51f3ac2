"""run.py CT MASK CASE SEED OUT [screen N px gens pop]: register a case with global+opt, optionally screening."""
import json, sys, time
from dataclasses import replace
import torch
from sopi.registration import methods
from sopi.registration.global_search import GlobalStage
ct, mask, case, seed, out = sys.argv[1:6]
if len(sys.argv) > 6:
    n, px, gens, pop = map(int, sys.argv[6:10])
    stages = methods.METHODS["global+opt"]
    methods.METHODS["global+opt"] = (replace(stages[0], screen_hypotheses=n, screen_px=px, screen_generations=gens, screen_population=pop), *stages[1:])
from sopi.registration import register
from sopi.geometry import load_pose, CArmGeometry
from sopi.io import read_ct, read_mask, read_xray
ctv = read_ct(ct)
xray = read_xray(f"{case}/xray.mha", geometry=CArmGeometry.load(f"{case}/geometry.json"))
t = time.perf_counter()
r = register(ctv, xray, initial_pose=load_pose(f"{case}/init.json"), mask=mask, method="global+opt", seed=int(seed), device="cpu")
d = r.to_dict(); d["wall_s"] = time.perf_counter() - t
json.dump(d, open(out, "w"))
