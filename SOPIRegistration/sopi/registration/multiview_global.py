"""The global stage with several views: view 0 proposes poses, the other views place their depth.

:func:`~sopi.registration.global_search.global_search` matches one image; on view 0 it finds
the rotation and the in-plane position well, the depth (a scale change of a few per cent)
less so. A view ``k`` taken from another direction sees view 0's depth as an in-plane
shift: for each of view 0's refined hypotheses, view ``k`` is rendered once on a detector
extended by the depth range, its X-ray is matched at every shift at once (FFT, masked
gradient correlation, as in the global search), and the best shifts move the CT across view
``k``'s rays (the rotation is kept). Every hypothesis and every moved one is scored by the
mean similarity over all views; the best is refined on all views by the global stage's own
short CMA-ES.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..geometry import CArmGeometry, invert_rigid, rigid, transform_points
from ..similarity import image_gradients
from ..template_matching import masked_ncc_maps, top_peaks
from .global_search import GlobalOutcome, GlobalStage, global_search, gradient_templates
from .optimizers import Monitor, cma_es

__all__ = ["align_in_view", "joint_global_search"]


def joint_global_search(problem, stage: GlobalStage, monitor: Monitor, seed: int = 0) -> GlobalOutcome:
    """The global search on ``problem`` (a :class:`~sopi.registration.multiview.MultiViewProblem`).

    One view: :func:`global_search` itself. Several: view 0's hypotheses, each also moved
    to where every other view's X-ray matches, ranked by the mean similarity over the views;
    the best one refined on all views. ``hypotheses`` of the outcome are ``(theta, mean
    similarity)``, best first.
    """
    if len(problem.views) == 1:
        return global_search(problem.views[0], stage, monitor, seed)
    # view 0 alone cannot vouch for a joint pose (its depth is what the other views settle): always search
    outcome = global_search(problem.views[0], replace(stage, accept_start_above=None), monitor, seed)
    candidates = []
    for theta, _ in outcome.hypotheses:
        candidates.append(theta)
        for index in range(1, len(problem.views)):
            candidates.extend(align_in_view(problem, index, theta, stage))
    thetas = torch.stack(candidates)
    longest = max(problem.geometry.rows, problem.geometry.cols)
    refine_factor = max(1, round(longest / stage.refine_px))
    with torch.no_grad():
        joint = problem.similarity(thetas, refine_factor, stage.measure)
    order = torch.argsort(joint, descending=True).tolist()
    ranked = [(thetas[index], float(joint[index])) for index in order]
    scale = torch.tensor([stage.refine_scale[0]] * 3 + [stage.refine_scale[1]] * 3, dtype=torch.float64)

    def loss(batch: torch.Tensor) -> torch.Tensor:
        return -problem.similarity(batch, refine_factor, stage.measure)

    refined = cma_es(loss, ranked[0][0], scale, generations=stage.refine_generations, population=stage.refine_population,
                     sigma=1.0, bound=2.0, seed=seed + 1000, monitor=Monitor(None, monitor.cancel))
    best = (refined.theta, -refined.loss) if -refined.loss >= ranked[0][1] else ranked[0]
    views = len(problem.views)
    renders = outcome.renders + len(outcome.hypotheses) * (views - 1) + len(thetas) * views + refined.evaluations * views
    return GlobalOutcome(best[0], -best[1], outcome.iterations + refined.iterations, renders, True,
                         hypotheses=[best, *ranked[1:]], renders=renders)


def align_in_view(problem, index: int, theta: torch.Tensor, stage: GlobalStage, peaks: int | None = None) -> list[torch.Tensor]:
    """``theta`` moved across view ``index``'s rays so its DRR there lands on its X-ray, one per match.

    View ``index`` is rendered at ``theta`` on its working detector (``stage.detector_px``)
    extended on every side by the image shift a depth change of ``stage.depth_mm`` in that
    view would cause (at most ``stage.max_extent`` detectors wide); the X-ray's gradients are
    matched at every shift by FFT and the ``peaks`` best shifts (``stage.peaks_per_map`` by
    default) become translations perpendicular to that view's principal ray at the pivot's
    depth. The rotation is unchanged.
    """
    view = problem.views[index]
    level = view.level(max(1, round(max(view.geometry.rows, view.geometry.cols) / stage.detector_px)))
    small = level.projector.geometry
    pose = view.pose(theta.to(torch.float64))
    depth = float(transform_points(pose, view.pivot_world.to(torch.float64)[None])[0, 2])
    du, dv = small.pixel_spacing_mm
    reach = stage.depth_mm * small.sdd_mm / max(depth, 1e-6)  # mm on the detector
    reach_cols = int(min(math.ceil(reach / du), (stage.max_extent - 1) / 2 * small.cols))
    reach_rows = int(min(math.ceil(reach / dv), (stage.max_extent - 1) / 2 * small.rows))
    search = small.padded(reach_cols, reach_rows, reach_cols, reach_rows)
    projector = level.projector.on_detector(search)  # the view's voxels and blended slices
    with torch.no_grad():
        rendered = projector(pose[None].to(view.device))
        drr = rendered[:, 0] if rendered.ndim == 4 else rendered
        gradient_x, gradient_y = image_gradients(drr.to(torch.float32))
        templates, masks = gradient_templates(level.fixed, level.weight, small, [(0.0, 1.0)])
        maps = masked_ncc_maps(torch.stack([gradient_x, gradient_y], dim=1), templates, masks)
        _, rows, cols = top_peaks(maps, peaks or stage.peaks_per_map, separation_px=3)
    reference_from_view = invert_rigid(view.view_from_reference.to(torch.float64)) if view.view_from_reference is not None else torch.eye(4, dtype=torch.float64)
    moved = []
    for row, col in zip(rows[0, 0].tolist(), cols[0, 0].tolist()):
        # the X-ray's pixel p sits on the DRR's pixel p + (col - reach_cols, row - reach_rows): move the CT back by that
        shift_mm = torch.tensor([-(col - reach_cols) * du * depth / small.sdd_mm, -(row - reach_rows) * dv * depth / small.sdd_mm, 0.0],
                                dtype=torch.float64)
        view_pose = rigid(torch.eye(3, dtype=torch.float64), shift_mm) @ pose
        moved.append(view.reference.params(reference_from_view @ view_pose))
    return moved
