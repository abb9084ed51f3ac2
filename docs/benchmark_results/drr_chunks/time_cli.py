"""Whole `sopi register` wall time (default method, spine segmented, torch's default threads) on own realistic paper
cases, two code versions interleaved case by case (order alternating), then each result's mTRE against gt.json."""
import json, os, subprocess, sys, time
from pathlib import Path
import torch
sys.path.insert(0, "/work/main/SOPIRegistration")
from sopi.benchmark import target_points
from sopi.distances import mtre_mm
from sopi.geometry import load_pose
from sopi.io import read_ct, read_mask

VERSIONS = {"base": "/tmp/s24/base/SOPIRegistration", "new": "/work/main/SOPIRegistration"}
if os.environ.get("VERSIONS"):  # name=path,...: other versions (a single one: times only)
    VERSIONS = dict(pair.split("=", 1) for pair in os.environ["VERSIONS"].split(","))
S = "/work/main/SOPIRegistration/Resources/SampleData"
CTS = {"sample": (f"{S}/sample_ct.nii.gz", f"{S}/sample_ct_vertebrae.nii.gz"),
       "pelvis": ("/tmp/data/ts_pelvis_ct.nii.gz", "/tmp/data/ts_pelvis_spine.nii.gz"),
       "chest": ("/tmp/data/popi_ct.nii.gz", "/tmp/data/popi_spine.nii.gz")}
out = Path(sys.argv[1]); out.mkdir(exist_ok=True)
cases = [int(c) for c in sys.argv[2].split(",")] if len(sys.argv) > 2 else list(range(10))
points = {}
for c in cases:
    for name, (ct, mask) in CTS.items():
        if name not in points:
            points[name] = target_points(read_mask(mask, read_ct(ct)))
        d = Path(f"/tmp/s23/speed/{name}_{c}")
        order = list(VERSIONS) if (c + len(name)) % 2 == 0 else list(VERSIONS)[::-1]
        for version in order:
            result = out / f"{name}_{c}_{version}.json"
            env = {**os.environ, "PYTHONPATH": VERSIONS[version]}
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
                    "passes": sorted({stage["stage"].split(": ")[0] for stage in record["stages"] if ": " in stage["stage"]})}
            print(json.dumps(line), flush=True)
