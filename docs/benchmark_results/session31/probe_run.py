"""Run sopi.register in-process on cases ROOT/{ct}_{case} (argv: ROOT OUT_JSONL names...), logging:
the start judgements (iterations, confidence) of every global search, and every judge() call of run_passes
(the first pose re-judged on the masked problem), with each pass's stages. Does not change any result."""
import json, sys, time, pathlib
import sopi
import torch
from sopi.registration import global_search as gs, passes, api
from sopi.registration.confidence import START_COEFFICIENTS
from sopi.io import read_xray
from sopi.geometry import load_pose
from sopi.cli import _load_geometry
S = "/work/main/SOPIRegistration/Resources/SampleData"; T = "/work/shared/data/tptbox_lumbar_crop"
CTS = {"sample": f"{S}/sample_ct.nii.gz", "pelvis": "/tmp/data/ts_pelvis_ct.nii.gz", "chest": "/tmp/data/popi_ct.nii.gz",
       "tpt": f"{T}/sub-ct_label-22_ct.nii.gz"}
LOG = {}
orig_assess = gs.assess
def assess(problem, theta, *a, **k):
    out = orig_assess(problem, theta, *a, **k)
    if k.get("coefficients") is START_COEFFICIENTS:
        LOG.setdefault("start_judgements", []).append(round(float(out.confidence), 4))
    return out
gs.assess = assess
orig_judged = gs._judged_start
def judged_start(problem, stage, refine):
    LOG.setdefault("start_judgements", []).append("|")
    t = time.perf_counter(); out = orig_judged(problem, stage, refine)
    LOG.setdefault("start_judge_s", []).append(round(time.perf_counter() - t, 2))
    return out
gs._judged_start = judged_start
orig_run_passes = passes.run_passes
def run_passes(run, stages, second_look=None, judge=None, other_readings=None):
    def judge_logged(problem, theta):
        out = judge(problem, theta)
        LOG.setdefault("rejudged_first", []).append({"theta": [round(float(v), 4) for v in theta.reshape(6)], "confidence": round(float(out.confidence), 4)})
        return out
    return orig_run_passes(run, stages, second_look, judge_logged if judge is not None else None, other_readings)
api.run_passes = run_passes
root, out = pathlib.Path(sys.argv[1]), open(sys.argv[2], "a")
for name in sys.argv[3:]:
    ct = CTS[name.split("_")[0]]; d = root / name
    LOG.clear()
    xray = read_xray(d / "xray.mha", geometry=_load_geometry(d / "geometry.json"))
    t = time.perf_counter()
    res = sopi.register(ct, xray, initial_pose=load_pose(d / "init.json"))
    rec = {"case": name, "engine_s": round(time.perf_counter() - t, 2), "matrix": res.camera_from_world.tolist(), "pivot_world_mm": res.pivot_world.tolist(),
           "confidence": res.confidence, "likely_failed": res.likely_failed, "stages": res.stages, **LOG}
    out.write(json.dumps(rec, default=str) + "\n"); out.flush()
