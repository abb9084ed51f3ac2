"""Per-parameter RTPI errors on 12 paper and 12 wide poses (seed 2026) of a given CT, for several models."""
import sys, torch
sys.path.insert(0, "SOPIRegistration")
from sopi.nets.model_file import load_model
from sopi.nets.predict import rtpi_theta
from sopi.protocols import get_protocol
from sopi.render import render_drr, rendering_volume
from sopi.segment import mask_centroid_world
from sopi.geometry import nominal_view
from sopi.io import read_ct, read_mask
torch.set_num_threads(1)
ct = read_ct(sys.argv[1]); labels = read_mask(sys.argv[2], ct)
spine = labels.with_data((labels.data != 0).to(torch.uint8))
att = rendering_volume(ct, "hu")
for path in sys.argv[3:]:
    model = load_model(path)
    G = model.geometry
    view = nominal_view("ap", mask_centroid_world(spine), G.source_to_isocenter_mm)
    for proto in ("paper", "wide"):
        thetas = get_protocol(proto).sample(12, torch.Generator().manual_seed(2026))
        det = G.resized(128, 128)
        err = torch.stack([(rtpi_theta(model, att, spine, view, render_drr(att, det, view.pose(t), step_mm=2.0)) - t) for t in thetas])
        print(path.split("/")[-1], proto, "mean abs", [round(v, 2) for v in err.abs().mean(0).tolist()], "signed tz", round(float(err[:, 5].mean()), 2), "nominal", [round(v, 2) for v in thetas.abs().mean(0).tolist()], flush=True)
