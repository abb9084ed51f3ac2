"""Where the candidates near the truth rank in the FFT search (global_search's loop, copied)."""
import json, sys, math, itertools, torch
exec(open(__file__.replace('rank_of_truth.py', 'similarity_at_truth.py')).read().split('ref = problem(sp, 5)')[0])
from sopi.registration.global_search import (GlobalStage, _grid, _search_detector, gradient_templates, _SpineMaps, _FFT_SCORES,
    _matched_pose, same_hypothesis)
from sopi.similarity import image_gradients
from sopi.template_matching import top_peaks
stage = GlobalStage()
p = problem(sp, 5)
gt_theta = p.reference.params(gt)
print("truth", [round(v, 1) for v in gt_theta.tolist()])
score = _FFT_SCORES[stage.fft_score]
tilts = _grid(stage.out_of_plane_deg, stage.out_of_plane_step_deg); rolls = tilts
rotations = torch.tensor(list(itertools.product(tilts, rolls)), dtype=torch.float64)
longest = max(p.geometry.rows, p.geometry.cols)
level = p.level(max(1, round(longest / stage.detector_px)))
small = level.projector.geometry
search = _search_detector(p, small, stage.max_extent)
projector = p.attenuation_projector(search, level.projector.step_mm)
angles = _grid(stage.in_plane_deg, stage.in_plane_step_deg)
depth = p.geometry.source_to_isocenter_mm
scales = torch.linspace(math.log((depth - stage.depth_mm) / depth), math.log((depth + stage.depth_mm) / depth), stage.depth_steps).exp().tolist()
warps = list(itertools.product(angles, scales))
templates, masks = gradient_templates(level.fixed, level.weight, small, warps)
spine_maps = _SpineMaps(p, search, small)
cands = []
for start in range(0, len(rotations), 8):
    chunk = rotations[start:start + 8]
    theta = torch.zeros(len(chunk), 6, dtype=torch.float64); theta[:, :2] = chunk
    with torch.no_grad():
        poses = p.pose(theta)
        drr = projector(poses)
        gx, gy = image_gradients(drr.to(torch.float32))
        maps = spine_maps.in_view_only(score(torch.stack([gx, gy], dim=1), templates, masks), poses)
        values, rows, cols = top_peaks(maps, stage.peaks_per_map, separation_px=3)
    for r, k, q in itertools.product(range(len(chunk)), range(len(warps)), range(values.shape[-1])):
        if math.isfinite(float(values[r, k, q])):
            cands.append((float(values[r, k, q]), start + r, k, int(rows[r, k, q]), int(cols[r, k, q])))
cands.sort(key=lambda c: -c[0])
ref = p.reference
pivot_depth = float(transform_points(ref.camera_from_world, ref.isocenter_world[None])[0, 2]) if False else None
from sopi.geometry import transform_points
pivot_depth = float(transform_points(ref.camera_from_world, ref.isocenter_world[None])[0, 2])
chosen = [torch.zeros(6, dtype=torch.float64)]
first = None
for rank, (sc, r, k, row, col) in enumerate(cands[:5000]):
    t0 = torch.zeros(6, dtype=torch.float64); t0[:2] = rotations[r]
    angle, scale = warps[k]
    pr = small.principal_point_px
    off = (col + pr[0] - search.principal_point_px[0], row + pr[1] - search.principal_point_px[1])
    th = ref.params(_matched_pose(p.pose(t0), search, off, angle, scale, pivot_depth))
    new = all(not same_hypothesis(th, o) for o in chosen)
    if new: chosen.append(th)
    d = (th - gt_theta).abs()
    if bool(d[:3].max() < 8 and d[3:].max() < 25):
        first = (rank, len(chosen) - 1 if new else -1, sc, rotations[r].tolist())
        break
print("RESULT", sys.argv[3].split('/')[-1], "truth", [round(v, 1) for v in gt_theta.tolist()], "first near:", first, "top score", round(cands[0][0], 3))
