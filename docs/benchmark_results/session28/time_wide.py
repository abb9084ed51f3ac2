"""Whole `sopi register` wall time (default method, spine segmented, torch's default threads) on realistic cases in
ROOT/{ct}_{case}; versions as name=path (PYTHONPATH) interleaved; prints one JSON line per run with mTRE."""
import json, os, subprocess, sys, time
from pathlib import Path
import torch
sys.path.insert(0, "/work/main/SOPIRegistration")
from sopi.benchmark import target_points
from sopi.distances import mtre_mm
from sopi.geometry import load_pose
from sopi.io import read_ct, read_mask

S = "/work/main/SOPIRegistration/Resources/SampleData"
T = "/work/shared/data/tptbox_lumbar_crop"
CTS = {"sample": (f"{S}/sample_ct.nii.gz", f"{S}/sample_ct_vertebrae.nii.gz"),
       "pelvis": ("/tmp/data/ts_pelvis_ct.nii.gz", "/tmp/data/ts_pelvis_spine.nii.gz"),
       "chest": ("/tmp/data/popi_ct.nii.gz", "/tmp/data/popi_spine.nii.gz"),
       "tpt": (f"{T}/sub-ct_label-22_ct.nii.gz", f"{T}/sub-ct_seg-vert_label-22_msk.nii.gz"),
       "lidc_w1": ("/tmp/data/lidc_hu.nii.gz", "/tmp/data/lidc_spine.nii.gz")}
root, out = Path(sys.argv[1]), Path(sys.argv[2]); out.mkdir(exist_ok=True, parents=True)
cases = [int(c) for c in sys.argv[3].split(",")]
names = sys.argv[4].split(",")
versions = dict(pair.split("=", 1) for pair in os.environ.get("VERSIONS", "new=/work/main/SOPIRegistration").split(","))
points = {}
for c in cases:
    for name in names:
        ct, mask = CTS[name]
        if name not in points:
            points[name] = target_points(read_mask(mask, read_ct(ct)))
        d = root / f"{name}_{c}"
        order = list(versions) if (c + len(name)) % 2 == 0 else list(versions)[::-1]
        for version in order:
            result = out / f"{name}_{c}_{version}.json"
            env = {**os.environ, "PYTHONPATH": versions[version]}
            env.pop("OMP_NUM_THREADS", None)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "sopi", "--progress", "none", "register", "--ct", ct, "--xray", str(d / "xray.mha"),
                            "--geometry", str(d / "geometry.json"), "--init", str(d / "init.json"), "--out", str(result)],
                           env=env, capture_output=True, cwd="/tmp")
            wall = time.perf_counter() - started
            record = json.loads(result.read_text())
            pose = torch.tensor(record["matrix"], dtype=torch.float64)
            error = float(mtre_mm(pose, load_pose(d / "gt.json"), points[name]))
            line = {"ct": name, "case": c, "version": version, "wall_s": round(wall, 2), "engine_s": record["time_s"],
                    "mtre_mm": round(error, 2), "confidence": record["confidence"], "likely_failed": record["likely_failed"],
                    "stages": [[s["stage"], round(s.get("time_s", 0), 2)] for s in record["stages"]]}
            print(json.dumps(line), flush=True)
