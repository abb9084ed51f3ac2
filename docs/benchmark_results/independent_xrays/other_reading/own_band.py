"""Register selected realistic benchmark X-rays (own simulator): own_band.py CT MASK SPEC... (SPEC = protocol:seed:case,case)"""
import sys, time, json, torch
from sopi.benchmark import benchmark_cases, result_row
from sopi.io_xray import XRay
from sopi.registration import register
torch.set_num_threads(1)
ct_path, mask_path = sys.argv[1:3]
for spec in sys.argv[3:]:
    protocol, seed, cases = spec.split(":"); seed = int(seed); cases = [int(c) for c in cases.split(",")]
    ct, spine, geometry, nominal, points, thetas, images = benchmark_cases(ct_path, mask_path, protocol, 10, seed, True)  # the rows had 10 cases: the draws depend on it
    for i in cases:
        t = time.perf_counter()
        r = register(ct, XRay(images[i], geometry), initial_pose=nominal.camera_from_world, mask=spine, method="global+opt", device="cpu", seed=seed + i)
        row = result_row("global+opt", i, thetas[i], r, nominal, geometry, points)
        p = r.xray_preparation
        print("R", ct_path.split("/")[-1], protocol, seed, i, p.get("polarity"), p.get("polarity_alternative"), p.get("polarity_first_passes"),
              "mtre", round(row["mtre_mm"], 2), "failed", row["failed"], "conf", round(r.confidence, 3), "time", round(time.perf_counter() - t, 1), flush=True)
