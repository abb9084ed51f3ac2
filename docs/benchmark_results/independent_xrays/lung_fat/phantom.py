"""Small dense spheres in air: where DiffDRR and sopi draw them against the analytic projection."""
import sys, math, torch, numpy as np
sys.path.insert(0, "benchmarks"); sys.path.insert(0, "SOPIRegistration")
from independent_xrays import diffdrr_image
from sopi.geometry import CArmGeometry, nominal_view, project_points
from sopi.volume import Volume
from sopi.render import render_drr, rendering_volume
from scipy import ndimage

spacing = [float(v) for v in sys.argv[1].split(",")] if len(sys.argv) > 1 else [1.0, 1.0, 1.0]  # (x, y, z) mm
size = [int(round(160 / s)) for s in spacing]
world_from_index = torch.eye(4, dtype=torch.float64)
world_from_index[:3, :3] = torch.diag(torch.tensor(spacing, dtype=torch.float64))
world_from_index[:3, 3] = torch.tensor([-80.0, -80.0, -80.0]) + 0.3
k, j, i = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in size[::-1]], indexing="ij")
xyz = torch.stack([i, j, k], -1) @ world_from_index[:3, :3].T + world_from_index[:3, 3]
centres = torch.tensor([[0, 0, 0], [40, 0, 0], [0, 40, 0], [0, 0, 40], [-40, -30, 20], [30, 30, -40], [-20, 50, -50], [50, -50, 50]], dtype=torch.float64)
hu = torch.full(xyz.shape[:3], -1000.0, dtype=torch.float64)
for c in centres:
    hu[((xyz - c) ** 2).sum(-1) <= 3.0 ** 2] = 1500.0
hu[0, 0, 0] = 0.0  # DiffDRR wants some soft tissue
vol = Volume(hu.to(torch.float32), world_from_index)
geometry = CArmGeometry.preset("perlove-plx118f")
g = geometry
print("detector", g.rows, g.cols, g.pixel_spacing_mm, g.principal_point_px, g.sdd_mm)
for view_theta in ([0, 0, 0, 0, 0, 0], [5, -8, 12, 4, -3, 30], [-10, 6, -20, -6, 5, -60]):
    pose = nominal_view("ap", torch.zeros(3, dtype=torch.float64), g.source_to_isocenter_mm).pose(torch.tensor(view_theta, dtype=torch.float64))
    expected = project_points(pose, g, centres)
    ours = render_drr(rendering_volume(vol, "hu"), g, pose).numpy()
    theirs = diffdrr_image(vol, pose, g, 1.0)
    for name, image in (("sopi", ours), ("diffdrr", theirs)):
        labels, n = ndimage.label(image > 0.3 * image.max())
        found = np.array(ndimage.center_of_mass(image, labels, range(1, n + 1)))[:, ::-1]  # (col, row)
        errors, radial = [], []
        for e in expected.numpy():
            d = np.linalg.norm(found - e, axis=1)
            if d.min() < 3:
                errors.append(found[d.argmin()] - e); radial.append(e - np.array(g.principal_point_px))
        errors, radial = np.array(errors), np.array(radial)
        scale = float((errors * radial).sum() / (radial * radial).sum())
        print(f"theta {view_theta} {name:8s} n={n} matched={len(errors)} mean err (px) {errors.mean(0).round(3)} max |err| {np.abs(errors).max():.3f} scale-1 {scale:+.5f}")
