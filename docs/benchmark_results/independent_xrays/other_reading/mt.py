import sys, json, torch
sys.path.insert(0, "benchmarks")
from independent_xrays import PRESET
from sopi.benchmark import case_metrics, target_points
from sopi.geometry import CArmGeometry, load_pose, nominal_view
from sopi.io import read_ct, read_mask
from sopi.segment import mask_centroid_world
ct = read_ct(sys.argv[1]); spine = read_mask(sys.argv[2], ct); g = CArmGeometry.preset(PRESET)
pts = target_points(spine); nom = nominal_view("ap", mask_centroid_world(spine), g.source_to_isocenter_mm)
for case, res in zip(sys.argv[3::2], sys.argv[4::2]):
    m = case_metrics(torch.tensor(json.load(open(res))["matrix"], dtype=torch.float64), load_pose(case + "/gt.json"), nom, g, pts)
    print(case, round(m.mtre_mm, 2), "failed", m.failed)
