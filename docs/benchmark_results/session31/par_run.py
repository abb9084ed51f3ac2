"""sopi register (CLI, one thread each, JOBS at a time) on ROOT/{ct}_{case}; PYTHONPATH=CODE; one JSON line per case.
argv: ROOT OUTDIR CODE JOBS names..."""
import json, os, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
S = "/work/main/SOPIRegistration/Resources/SampleData"; T = "/work/shared/data/tptbox_lumbar_crop"
CTS = {"sample": f"{S}/sample_ct.nii.gz", "pelvis": "/tmp/data/ts_pelvis_ct.nii.gz", "chest": "/tmp/data/popi_ct.nii.gz", "tpt": f"{T}/sub-ct_label-22_ct.nii.gz"}
root, out, code, jobs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]); out.mkdir(parents=True, exist_ok=True)
def one(name):
    d = root / name; result = out / f"{name}_new.json"
    env = {**os.environ, "PYTHONPATH": code, "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "sopi", "--progress", "none", "register", "--ct", CTS[name.split("_")[0]], "--xray", str(d / "xray.mha"),
                        "--geometry", str(d / "geometry.json"), "--init", str(d / "init.json"), "--out", str(result)], env=env, capture_output=True, cwd="/tmp")
    return name, round(time.perf_counter() - t, 1), p.returncode
with ThreadPoolExecutor(jobs) as pool:
    for name, wall, rc in pool.map(one, sys.argv[5:]):
        print(name, wall, rc, flush=True)
