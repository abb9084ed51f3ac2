"""ranks.py CASE...: where the truth ranks among the global search's FFT matches (a record, /tmp paths).

Each case is registered in process as ``benchmarks/independent_xrays.py run`` registers it, with the search's source
exec'd in its module with a hook after its matches are ranked. For each score asked for, the distinct rank of the first
match within 15 mm mTRE of the truth, and its mTRE, is printed. Environment:

- ``SCORES``: comma-separated, of ``whole`` (today's: the DRR's derivatives), ``spine`` (the DRR of the CT times its
  spine mask grown 3 voxels), ``sum`` (the mean of those two), ``z`` (each map z-scored over its finite values),
  ``excess`` (each map less its 90th percentile); default ``whole``;
- ``ORACLE=1``: the instruments' true footprints (the case's chain.json, grown 3 px) masked in the X-ray's weight too;
- ``PX``: the search detector's longest side (48 today);
- ``FULL=1``: register to the end: every pass's search is ranked, every hypothesis's refinement logged (mTRE before and
  after, similarity), and the result scored; otherwise each registration stops after its first search.
"""
import dataclasses, inspect, json, math, os, sys, textwrap
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, "/work/main/benchmarks"); sys.path.insert(0, "/work/main/SOPIRegistration")
from independent_xrays import *  # noqa
import sopi.registration.api as api
import sopi.registration.global_search as gs
import sopi.xray_prep as xp
from sopi.drr import Projector
from sopi.similarity import image_gradients

SCORES = os.environ.get("SCORES", "whole").split(",")
ORACLE, FULL, PX = os.environ.get("ORACLE") == "1", os.environ.get("FULL") == "1", int(os.environ.get("PX", "48"))
state = {}


class Done(Exception):
    pass


def scored_maps(poses, score, templates, masks, drr, spine_maps):
    """Every asked-for score's maps of one chunk of rendered poses."""
    gx, gy = image_gradients(drr.to(torch.float32))
    whole = score(torch.stack([gx, gy], dim=1), templates, masks)
    out = {"whole": whole}
    if {"spine", "sum"} & set(SCORES):
        sx, sy = image_gradients(state["spine_projector"](poses).to(torch.float32))
        out["spine"] = torch.nan_to_num(score(torch.stack([sx, sy], dim=1), templates, masks), nan=-1.0)
        out["sum"] = 0.5 * (whole + out["spine"])
    if {"z", "excess"} & set(SCORES):
        finite = torch.isfinite(whole)
        count = finite.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
        mean = torch.where(finite, whole, torch.zeros_like(whole)).sum(dim=(-2, -1), keepdim=True) / count
        var = torch.where(finite, (whole - mean) ** 2, torch.zeros_like(whole)).sum(dim=(-2, -1), keepdim=True) / count
        out["z"] = (whole - mean) / var.sqrt().clamp(min=1e-6)
        flat = torch.where(finite, whole, torch.full_like(whole, float("nan"))).flatten(-2).to(torch.float64)
        out["excess"] = whole - torch.nanquantile(flat, 0.9, dim=-1).to(whole.dtype)[..., None, None]
    return {name: spine_maps.in_view_only(out[name], poses) for name in SCORES}


def setup(problem, search, step):
    if {"spine", "sum"} & set(SCORES):
        grown = F.max_pool3d((problem.mask.data != 0).to(torch.float32)[None, None], 7, stride=1, padding=3)[0, 0]
        weighted = problem.volume.with_data(problem.volume.data * grown.to(problem.volume.data))
        state["spine_projector"] = Projector(weighted, search, step_mm=step).to(problem.device)


def truth_ranks(problem, stage, ranked, rotations, warps, small, search):
    """Print, per score, the distinct rank of the first match within 15 mm of the truth."""
    reference = problem.reference
    pivot = float(gs.transform_points(reference.camera_from_world, reference.isocenter_world[None])[0, 2])
    line = [state["case"].name, (stage.roll_deg, stage.in_plane_deg), "truth",
            [round(v, 1) for v in reference.params(state["truth"].to(torch.float64)).tolist()]]
    for name, candidates in ranked.items():
        candidates.sort(key=lambda item: -item[0])
        chosen, found = [], None
        for score, r, k, row, col in candidates[:4000]:
            theta0 = torch.zeros(6, dtype=torch.float64)
            theta0[:2] = rotations[r]
            angle, scale = warps[k]
            offset = (col + small.principal_point_px[0] - search.principal_point_px[0], row + small.principal_point_px[1] - search.principal_point_px[1])
            pose = gs._matched_pose(problem.pose(theta0), search, offset, angle, scale, pivot)
            theta = reference.params(pose)
            if all(not gs.same_hypothesis(theta, other) for other in chosen):
                chosen.append(theta)
                error = state["mtre"](pose)
                if error < 15:
                    found = (len(chosen), round(error, 1), round(score, 3))
                    break
        line.append((name, found))
    print(*line, flush=True)
    if not FULL:
        raise Done


source = textwrap.dedent(inspect.getsource(gs.global_search))
patches = [
    ("    score = _FFT_SCORES.get(stage.fft_score)\n", "    stage = replace(stage, detector_px=_PX)\n    score = _FFT_SCORES.get(stage.fft_score)\n"),
    ("    projector = problem.attenuation_projector(search, level.projector.step_mm)\n",
     "    projector = problem.attenuation_projector(search, level.projector.step_mm)\n    _SETUP(problem, search, level.projector.step_mm)\n"
     "    ranked = {name: [] for name in _SCORES}\n"),
    ("            maps = spine_maps.in_view_only(score(torch.stack([gradient_x, gradient_y], dim=1), templates, masks), poses)\n",
     "            every = _MAPS(poses, score, templates, masks, drr, spine_maps)\n            maps = every[_SCORES[0]]\n"
     "            for name, other in every.items():\n"
     "                v, rw, cl = top_peaks(other, stage.peaks_per_map, separation_px=3)\n"
     "                ranked[name] += [(float(v[a, b, c]), start + a, b, int(rw[a, b, c]), int(cl[a, b, c])) for a, b, c in itertools.product(range(len(chunk)), range(len(warps)), range(v.shape[-1])) if math.isfinite(float(v[a, b, c]))]\n"),
    ("    candidates.sort(key=lambda item: -item[0])\n",
     "    candidates.sort(key=lambda item: -item[0])\n    _HOOK(problem, stage, ranked, rotations, warps, small, search)\n"),
]
for old, new in patches:
    assert old in source, old
    source = source.replace(old, new)
gs.__dict__.update(_HOOK=truth_ranks, _MAPS=scored_maps, _SETUP=setup, _SCORES=SCORES, _PX=PX)
exec(compile(source, gs.__file__, "exec"), gs.__dict__)
api.global_search = gs.global_search

original_refiner = gs._refiner


def logging_refiner(problem, stage, seed, cancel):
    refine = original_refiner(problem, stage, seed, cancel)

    def wrapped(theta, index, *args, **kwargs):
        outcome = refine(theta, index, *args, **kwargs)
        print("   hypothesis", index, "mtre before %.1f after %.1f similarity %.3f" % (
            state["mtre"](problem.pose(theta.reshape(1, 6))[0]), state["mtre"](problem.pose(outcome.theta.reshape(1, 6))[0]), -float(outcome.loss)), flush=True)
        return outcome
    return wrapped


if FULL:
    gs._refiner = logging_refiner

original_prepare = xp.prepare_xray


def oracle_prepare(image, *args, **kwargs):
    """The preparation, with the case's instruments (chain.json) masked at the file's size."""
    prepared = original_prepare(image, *args, **kwargs)
    rows, cols = prepared.weight.shape
    if (rows, cols) != state["shape"]:
        return prepared
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    keep = np.ones((rows, cols), bool)
    for tool in state["chain"]["instruments"]:
        cy, cx = tool["centre"][0] * rows, tool["centre"][1] * cols
        angle = math.radians(tool["angle_deg"])
        along = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
        across = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
        keep &= ~((np.abs(along) <= tool["length_mm"] / state["pixel_mm"] / 2 + 3) & (np.abs(across) <= tool["width_mm"] / state["pixel_mm"] / 2 + 3))
    return dataclasses.replace(prepared, weight=prepared.weight * torch.tensor(keep, dtype=prepared.weight.dtype))


if ORACLE:
    xp.prepare_xray = oracle_prepare

from sopi.cli import main  # noqa: E402

for case in map(Path, sys.argv[1:]):
    truth_json = json.loads((case / "gt.json").read_text())
    ct = read_ct(truth_json["ct"])
    spine = read_mask(truth_json["mask"], ct)
    geometry = CArmGeometry.preset(PRESET)
    points = target_points(spine)
    nominal = nominal_view("ap", mask_centroid_world(spine), geometry.source_to_isocenter_mm)
    truth = load_pose(case / "gt.json")
    state.update(case=case, truth=truth, chain=json.loads((case / "chain.json").read_text()), pixel_mm=float(geometry.pixel_spacing_mm[0]),
                 shape=(geometry.rows, geometry.cols),
                 mtre=lambda pose: case_metrics(pose.reshape(4, 4).to(torch.float64), truth, nominal, geometry, points).mtre_mm)
    out = f"/tmp/ranks_{case.parent.name}_{case.name}.json"
    try:
        main(["--progress", "none", "register", "--ct", truth_json["ct"], "--xray", str(case / "xray.mha"), "--geometry", str(case / "geometry.json"),
              "--init", str(case / "init.json"), "--seed", str(truth_json["seed"] + truth_json["case"]), "--out", out])
        result = json.loads(Path(out).read_text())
        metrics = case_metrics(torch.tensor(result["matrix"], dtype=torch.float64), truth, nominal, geometry, points)
        print(case.name, "RESULT mtre %.2f confidence %.3f likely_failed %s" % (metrics.mtre_mm, result["confidence"], result["likely_failed"]), flush=True)
    except Done:
        pass
