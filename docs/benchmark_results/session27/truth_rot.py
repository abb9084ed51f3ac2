"""FFT search scores: the coarse rotation grid against the truth's own (rx, ry) and a 5-degree grid about it."""
import sys, math, itertools, torch
sys.argv = [sys.argv[0], *sys.argv[1:4], "none"]
exec(open("/work/main/docs/benchmark_results/fft_rank/similarity_at_truth.py").read().split('ref = problem(sp, 5)')[0])
from sopi.geometry import transform_points
from sopi.registration.global_search import (GlobalStage, _grid, _search_detector, gradient_templates, _SpineMaps, _FFT_SCORES, _matched_pose)
from sopi.similarity import image_gradients
from sopi.template_matching import top_peaks
stage = GlobalStage()
p = problem(sp, 5)
gt_theta = p.reference.params(gt)
score = _FFT_SCORES[stage.fft_score]
tilts = _grid(stage.out_of_plane_deg, stage.out_of_plane_step_deg)
coarse = [tuple(r) for r in itertools.product(tilts, tilts)]
rx, ry = float(gt_theta[0]), float(gt_theta[1])
fine = [(rx + a, ry + b) for a in (-5, 0, 5) for b in (-5, 0, 5)]
nearest = [(round(rx / 5) * 5 + a, round(ry / 5) * 5 + b) for a in (-5, 0, 5) for b in (-5, 0, 5)]
rotations = torch.tensor(coarse + fine + nearest, dtype=torch.float64)
level = p.level(max(1, round(max(p.geometry.rows, p.geometry.cols) / stage.detector_px)))
small = level.projector.geometry
search = _search_detector(p, small, stage.max_extent)
projector = p.attenuation_projector(search, level.projector.step_mm)
angles = _grid(stage.in_plane_deg, stage.in_plane_step_deg)
depth = p.geometry.source_to_isocenter_mm
scales = torch.linspace(math.log((depth - stage.depth_mm) / depth), math.log((depth + stage.depth_mm) / depth), stage.depth_steps).exp().tolist()
warps = list(itertools.product(angles, scales))
templates, masks = gradient_templates(level.fixed, level.weight, small, warps)
spine_maps = _SpineMaps(p, search, small)
ref = p.reference
pivot_depth = float(transform_points(ref.camera_from_world, ref.isocenter_world[None])[0, 2])
best_near, best_any = {}, {}
for start in range(0, len(rotations), 8):
    chunk = rotations[start:start + 8]
    theta = torch.zeros(len(chunk), 6, dtype=torch.float64); theta[:, :2] = chunk
    with torch.no_grad():
        poses = p.pose(theta)
        drr = projector(poses)
        gx, gy = image_gradients(drr.to(torch.float32))
        maps = spine_maps.in_view_only(score(torch.stack([gx, gy], dim=1), templates, masks), poses)
        values, rows, cols = top_peaks(maps, 4, separation_px=3)
    for r, k, q in itertools.product(range(len(chunk)), range(len(warps)), range(values.shape[-1])):
        v = float(values[r, k, q])
        if not math.isfinite(v):
            continue
        idx = start + r
        best_any[idx] = max(best_any.get(idx, -1), v)
        angle, scale = warps[k]
        pr = small.principal_point_px
        off = (int(cols[r, k, q]) + pr[0] - search.principal_point_px[0], int(rows[r, k, q]) + pr[1] - search.principal_point_px[1])
        th = ref.params(_matched_pose(p.pose(theta[r]), search, off, angle, scale, pivot_depth))
        d = (th - gt_theta).abs()
        if bool(d[:3].max() < 8 and d[3:].max() < 25):
            best_near[idx] = max(best_near.get(idx, -1), v)
n = len(coarse)
top = max(best_any[i] for i in range(n) if i in best_any)
cn = max([best_near.get(i, -1) for i in range(n)])
tn = best_near.get(n + 4, -1)
fn = max(best_near.get(i, -1) for i in range(n, n + 9))
nn = max(best_near.get(i, -1) for i in range(n + 9, n + 18))
print(f"RESULT {sys.argv[3].split('/')[-1]} truth rx {rx:.1f} ry {ry:.1f}: coarse top {top:.3f}, coarse near {cn:.3f}, truth-rotation near {tn:.3f}, +-5 about truth near {fn:.3f}, 5-deg grid near {nn:.3f}")
