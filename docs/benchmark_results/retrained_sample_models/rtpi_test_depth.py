import sys, torch
sys.path.insert(0, "SOPIRegistration"); sys.path.insert(0, "tests")
from sopi.nets.model_file import load_model
from sopi.nets.predict import rtpi_theta
from sopi.protocols import get_protocol
from sopi.render import render_drr, rendering_volume
from sopi.segment import mask_centroid_world
from sopi.geometry import nominal_view, CArmGeometry
from sopi.io import read_ct, read_mask
from sopi.sample_data import sample_ct_path, sample_vertebrae_path
torch.set_num_threads(1)
model = load_model(sys.argv[1])
ct = read_ct(sample_ct_path()); labels = read_mask(sample_vertebrae_path(), ct)
spine = labels.with_data((labels.data != 0).to(torch.uint8))
G = model.geometry
view = nominal_view("ap", mask_centroid_world(spine), G.source_to_isocenter_mm)
att = rendering_volume(ct, "hu")
for proto, seed, n in (("wide", 2026, 12), ("paper", 2026, 12)):
    thetas = get_protocol(proto).sample(n, torch.Generator().manual_seed(seed))
    det = G.resized(128, 128)
    err = torch.stack([(rtpi_theta(model, att, spine, view, render_drr(att, det, view.pose(t), step_mm=2.0)) - t) for t in thetas])
    print(proto, "mean abs err", [round(v, 2) for v in err.abs().mean(0).tolist()], "mean signed tz", round(float(err[:, 5].mean()), 2), "nominal", [round(v, 2) for v in thetas.abs().mean(0).tolist()])
