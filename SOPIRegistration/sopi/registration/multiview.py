"""Joint registration of several X-rays of one patient (an AP and a lateral, say).

The pose searched is view 0's ``camera_from_world``; view ``k`` is seen at
``view_from_reference[k] @ camera_from_world[0]`` (``docs/conventions.md``, "Several
views"). Each view keeps its own :class:`PoseProblem` (its X-ray, detector levels, weights
and scatter read-out); the similarity a stage optimises is the mean over the views, so a
second view with a known C-arm rotation pins down the depth that one view barely sees.

Views whose detectors match view 0's are rendered in one projector call per candidate batch.
The global stage (``global+opt``, the default) searches on view 0, the other views place each
hypothesis' depth, and the hypotheses are ranked on every view
(:mod:`sopi.registration.multiview_global`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..device import resolve_device
from ..errors import InputError
from ..geometry import CArmGeometry, nominal_view, params_to_dict
from ..io_xray import XRay, working_xray
from ..render import working_volumes
from ..volume import Volume
from .global_search import GlobalStage
from .methods import DEFAULT_METHOD, METHODS, Stage, get_method, needs_mask, scaled_budgets, several_view_stages, single_level
from .optimizers import Monitor
from .problem import PoseProblem, default_pivot, exposed_field
from .projectors import SharedProjectors

__all__ = ["LinkedProblem", "MultiViewProblem", "MultiViewResult", "multiview_methods", "register_views"]


@dataclass
class LinkedProblem(PoseProblem):
    """One view's :class:`PoseProblem` whose pose follows view 0's.

    ``initial_pose`` and ``pivot_world`` are view 0's, so ``theta`` means the same for every
    view; :meth:`pose` returns this view's ``camera_from_world``:
    ``view_from_reference @ view0_pose(theta)``.
    """

    view_from_reference: torch.Tensor | None = None

    def pose(self, theta: torch.Tensor) -> torch.Tensor:
        """This view's ``camera_from_world`` (..., 4, 4) for ``theta`` (..., 6) about view 0's initial pose."""
        base = super().pose(theta)
        return base if self.view_from_reference is None else self.view_from_reference.to(base) @ base


@dataclass
class MultiViewProblem:
    """The views of one registration, scored together (mean of their similarities)."""

    views: list[LinkedProblem]

    @property
    def geometry(self) -> CArmGeometry:
        """View 0's detector: stage levels are chosen on it and carried to the others by working width."""
        return self.views[0].geometry

    def pose(self, theta: torch.Tensor) -> torch.Tensor:
        """View 0's ``camera_from_world`` for ``theta``."""
        return self.views[0].pose(theta)

    def hold_region(self, theta: torch.Tensor | None) -> None:
        """Every view weights by its spine's projection at ``theta`` (:meth:`PoseProblem.hold_region`)."""
        for view in self.views:
            view.hold_region(theta)

    def hold_ct_edges(self, theta: torch.Tensor | None) -> None:
        """Every view leaves out the rays the CT's extent cuts at ``theta`` (:meth:`PoseProblem.hold_ct_edges`)."""
        for view in self.views:
            view.hold_ct_edges(theta)

    def hold_window(self, theta: torch.Tensor | None, factor: int = 1) -> None:
        """Every view renders its level within its own window at ``theta`` (:meth:`PoseProblem.hold_window`)."""
        for index, view in enumerate(self.views):
            view.hold_window(theta, self.view_factor(index, factor))

    def view_factor(self, index: int, factor: int) -> int:
        """The downsampling factor of view ``index`` that gives the working width view 0 has at ``factor``."""
        width = max(self.geometry.rows, self.geometry.cols) / factor
        return max(1, round(max(self.views[index].geometry.rows, self.views[index].geometry.cols) / width))

    def similarity(self, theta: torch.Tensor, factor: int, measure: str) -> torch.Tensor:
        """``(B,)`` mean similarity over the views for ``(B, 6)`` theta; differentiable in theta.

        Views whose detector at this level matches view 0's are rendered in one projector call
        (every view renders the same CT and mask; only the poses differ).
        """
        theta = theta.reshape(-1, 6)
        levels = [view.level(self.view_factor(index, factor)) for index, view in enumerate(self.views)]
        first = levels[0].projector
        shared = [index for index, level in enumerate(levels) if _same_detector(level.projector, first)]
        scores: dict[int, torch.Tensor] = {}
        if len(shared) > 1:
            poses = torch.cat([self.views[index].pose(theta.to(torch.float64)) for index in shared]).to(self.views[0].device)
            rendered = first(poses)
            for position, index in enumerate(shared):
                part = slice(position * len(theta), (position + 1) * len(theta))
                view = self.views[index]
                scores[index] = view._compare(levels[index], *view.split_rendered(levels[index], rendered[part], poses[part]), measure)
        for index, view in enumerate(self.views):
            if index not in scores:
                scores[index] = view.similarity(theta, self.view_factor(index, factor), measure)
        return torch.stack([scores[index] for index in range(len(self.views))]).mean(dim=0)


def _same_detector(projector, other) -> bool:
    """Whether two levels' projectors sample the same rays in their camera frames (one call can render both)."""
    if projector is other:
        return True
    plain = replace(projector.geometry, view_from_reference=None), replace(other.geometry, view_from_reference=None)
    return plain[0] == plain[1] and projector.step_mm == other.step_mm and projector.n_samples == other.n_samples


@dataclass
class MultiViewResult:
    """A joint registration: ``camera_from_world`` is view 0's; ``view_poses`` every view's.

    ``params`` are the paper's parameters of the result relative to view 0's initial pose,
    pivoting about ``pivot_world`` (deg, mm); ``view_similarities`` are each view's gradient
    correlation at the result (half-resolution detector). ``confidence`` is the weakest view's
    (:func:`sopi.registration.confidence.assess_views`), ``view_confidences`` every view's.
    """

    camera_from_world: torch.Tensor
    params: torch.Tensor
    method: str
    time_s: float
    similarity: float
    iterations: int
    converged: bool
    pivot_world: torch.Tensor
    view_poses: list[torch.Tensor]
    view_similarities: list[float]
    xrays: list[str]
    stages: list[dict] = field(default_factory=list)
    xray_preparation: list[dict] = field(default_factory=list)
    confidence: float = float("nan")  # in [0, 1]: the lowest of the views' (sopi.registration.confidence.assess_views)
    likely_failed: bool = True
    confidence_details: dict = field(default_factory=dict)
    view_confidences: list[float] = field(default_factory=list)
    mask_source: str = ""  # as RegistrationResult.mask_source
    ct_binned_by: tuple[int, int, int] = (1, 1, 1)  # as RegistrationResult.ct_binned_by
    spine: Volume | None = field(default=None, repr=False)  # as RegistrationResult.spine

    def to_dict(self) -> dict:
        """The ``RESULT.json`` content: ``matrix`` is view 0's ``camera_from_world``."""
        view_confidences = self.view_confidences or [float("nan")] * len(self.xrays)
        return {
            "matrix": self.camera_from_world.tolist(),
            "params": params_to_dict(self.params),
            "method": self.method,
            "time_s": round(self.time_s, 3),
            "similarity": self.similarity,
            "iterations": self.iterations,
            "converged": self.converged,
            "pivot_world_mm": self.pivot_world.tolist(),
            "confidence": round(self.confidence, 4),
            "likely_failed": self.likely_failed,
            "confidence_details": self.confidence_details,
            "mask_source": self.mask_source,
            "ct_binned_by": list(self.ct_binned_by),
            "views": [
                {"xray": name, "matrix": pose.tolist(), "similarity": score, "confidence": round(confidence, 4), "xray_preparation": prepared}
                for name, pose, score, confidence, prepared in zip(
                    self.xrays, self.view_poses, self.view_similarities, view_confidences, self.xray_preparation)
            ],
            "stages": self.stages,
        }


def multiview_methods() -> list[str]:
    """Methods made only of optimisation stages and the global search: the ones that work with several views."""
    return sorted(name for name, stages in METHODS.items() if all(isinstance(stage, (Stage, GlobalStage)) for stage in stages))


def register_views(
    ct: Volume | str | Path,
    xrays: Sequence[XRay | str | Path],
    *,
    geometries: Sequence[CArmGeometry | None] | None = None,
    initial_pose: torch.Tensor | None = None,
    view: str | None = None,
    mask: Volume | str | Path | None = None,
    auto_mask: bool | None = None,
    method: str | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    step_mm: float = 1.0,
    iteration_scale: float = 1.0,
    pyramid: bool = True,
    prepare: bool = True,
    flip: str = "auto",
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> MultiViewResult:
    """Register several X-rays of one patient to a CT at once.

    Args:
        ct: CT in HU (a :class:`Volume` or a file/DICOM folder).
        xrays: the X-rays (:class:`XRay` or files), view 0 first.
        geometries: one per X-ray (``None`` entries: the file's own); each after the first
            places its view with ``view_from_reference``, else the files' DICOM positioner
            angles do (:func:`sopi.views.views_from_reference`).
        initial_pose: view 0's ``camera_from_world`` to start from; else the nominal ``view``
            (``ap`` by default) about the spine centroid (the CT centre without a mask).
        mask: spine mask or label map on the CT grid; sets the pivot and weights every view;
            ``auto_mask`` segments it instead (``None``, the default: when the method needs one
            and none is given, as the global search does).
        method: a classical method or the global search (:func:`multiview_methods`); ``None`` runs
            :data:`~sopi.registration.methods.DEFAULT_METHOD` (``global+opt``); the learned ones are single-view.
        flip: as in :func:`sopi.registration.register`, for every view (``auto``: each file's own Patient
            Orientation against its view's start pose).
        Other arguments as in :func:`sopi.registration.register`.
    """
    from ..io import read_ct, read_mask, read_xray
    from ..validate import check_ct_content, check_pose_in_front, check_rigid_pose, check_seed, check_xray_signal
    from ..views import views_from_reference
    from ..xray_orientation import FLIPS, orient_xray
    from .api import _run_stage, _spine_mask
    from .passes import _Pass, run_passes, stage_loop

    check_seed(seed)
    if flip not in FLIPS:
        raise InputError(f"flip {flip!r} is not one of {FLIPS}")
    xrays = list(xrays)
    if not xrays:
        raise InputError("xrays: expected at least one X-ray")
    if geometries is not None and len(geometries) != len(xrays):
        raise InputError(f"geometries: {len(geometries)} given for {len(xrays)} X-rays; expected one geometry per X-ray")
    method = DEFAULT_METHOD if method is None else method
    if method not in multiview_methods():
        get_method(method)  # unknown names get the usual error
        raise InputError(f"method {method!r} uses trained networks and registers one view; with several X-rays use one of {multiview_methods()}")
    if initial_pose is not None:
        initial_pose = check_rigid_pose(initial_pose, "initial_pose")
        if view is not None:
            raise InputError("give either initial_pose or view, not both")
    stages = several_view_stages(scaled_budgets(get_method(method), iteration_scale))
    if not pyramid:
        stages = single_level(stages)
    started = time.perf_counter()
    ct_volume = ct if isinstance(ct, Volume) else read_ct(ct)
    check_ct_content(ct_volume.data, f"CT {ct}" if not isinstance(ct, Volume) else "CT")
    fixed = []
    for index, xray in enumerate(xrays):
        given = None if geometries is None else geometries[index]
        fixed.append(xray if isinstance(xray, XRay) else read_xray(xray, geometry=given))
        if isinstance(xray, XRay) and given is not None:
            fixed[-1] = XRay(xray.image, given, xray.path, xray.metadata, xray.field_mask)
        check_xray_signal(fixed[-1].image, f"X-ray {index} {fixed[-1].path or ''}".strip())
    names = [f"X-ray {index} ({item.path})" if item.path else f"X-ray {index}" for index, item in enumerate(fixed)]
    transforms = views_from_reference([item.geometry for item in fixed], [item.metadata for item in fixed], names)
    if auto_mask is None:
        auto_mask = mask is None and needs_mask(method)
    spine, mask_source = _spine_mask(ct_volume, mask, bool(auto_mask), progress, cancel, read_mask)
    if spine is not None:
        from ..segment import mask_centroid_world

        spine = spine.with_data((spine.data != 0).to(torch.uint8))
        pivot = mask_centroid_world(spine)
    geometry = fixed[0].geometry
    if initial_pose is None:
        center = pivot if spine is not None else ct_volume.center_world
        initial_pose = nominal_view(view or "ap", center, geometry.source_to_isocenter_mm).camera_from_world
    orientations, binnings = [], []
    for index, (item, transform) in enumerate(zip(fixed, transforms)):
        check_pose_in_front(transform @ initial_pose, ct_volume.center_world, item.geometry.sdd_mm, f"initial pose of {names[index]}")
        fixed[index], record = orient_xray(item, transform @ initial_pose, flip)
        fixed[index], binned_by = working_xray(fixed[index])
        orientations.append(record)
        binnings.append({"binned_by": binned_by} if binned_by > 1 else {})
    geometry = fixed[0].geometry
    if spine is None:
        pivot = default_pivot(initial_pose, geometry)
    # as register renders a fine CT (the pivot is the full mask's)
    used_spine = spine
    attenuation, spine, ct_binned_by = working_volumes(ct_volume, spine)
    chosen_device = resolve_device(device)
    if prepare:  # one polarity judgement for all views (one C-arm)
        from .preparation import prepare_views

        views_prepared = prepare_views(fixed, attenuation, [transform @ initial_pose for transform in transforms], chosen_device)
    else:
        views_prepared = [(item, None, {}) for item in fixed]
    prepared = [(item, weight, transform) for (item, weight, _), transform in zip(views_prepared, transforms)]
    preparations = [{**record, "orientation": turned, **binned} for (_, _, record), turned, binned in zip(views_prepared, orientations, binnings)]

    projectors = SharedProjectors()  # every view and pass renders the same voxels

    def run(chosen: tuple, note: str, start: torch.Tensor | None = None) -> _Pass:
        # no _Pass.alternatives: the joint confidence flags most correct realistic two-view results (docs/benchmarks.md,
        # tenth session), so the search's runner-ups would be refined on most cases; not measured for several views
        views = [LinkedProblem(  # fresh ones per pass: adapting to the X-ray changes their weights
            attenuation, item.image, item.geometry, initial_pose.to(torch.float64), pivot, mask=spine, device=chosen_device,
            step_mm=step_mm, xray_weight=weight, view_from_reference=transform, exposed=exposed_field(item), projectors=projectors,
        ) for item, weight, transform in prepared]
        found = [dict(record) for record in preparations]
        problem = MultiViewProblem(views)
        scatter_checked = False

        def step(index: int, stage, theta: torch.Tensor, monitor: Monitor):
            nonlocal scatter_checked
            if isinstance(stage, GlobalStage):
                from .multiview_global import joint_global_search

                outcome = joint_global_search(problem, stage, monitor, seed + index)
                return outcome, {"renders": outcome.renders, "hypotheses": [round(value, 4) for _, value in outcome.hypotheses],
                                 **({"tentative": True} if outcome.tentative else {})}
            factor = stage.level_factor(max(geometry.rows, geometry.cols))
            if prepare and index > 0 and not scatter_checked:  # the pose is close enough to judge scatter and edges
                for number, (linked, record) in enumerate(zip(views, found)):
                    record.update(linked.adapt_to_xray(theta, problem.view_factor(number, factor), stage.measure))
                scatter_checked = True
            return _run_stage(problem, stage, theta, seed + index, monitor), {}

        # every view renders each candidate pose
        return stage_loop(problem, chosen, note, step, lambda joint, theta: assess_views(joint.views, theta), found, progress, cancel,
                          renders_per_pose=len(views), start=start)

    from .confidence import assess_views

    final = run_passes(run, stages)
    views, theta, assessment = final.problem.views, final.theta, final.assessment
    with torch.no_grad():
        scores = [float(linked.similarity(theta[None], final.problem.view_factor(number, 2), "gc")[0]) for number, linked in enumerate(views)]
    if progress is not None:
        progress(1.0, "done")
    return MultiViewResult(
        camera_from_world=final.problem.pose(theta), params=theta, method=method, time_s=time.perf_counter() - started,
        similarity=final.similarity, iterations=final.iterations, converged=final.converged, pivot_world=pivot,
        view_poses=[linked.pose(theta) for linked in views], view_similarities=scores,
        xrays=[item.path or f"view {index}" for index, item in enumerate(fixed)], stages=final.records, xray_preparation=final.preparation,
        confidence=assessment.confidence, likely_failed=assessment.likely_failed, confidence_details=assessment.details(),
        view_confidences=[view.confidence for view in assessment.views], mask_source=mask_source, ct_binned_by=ct_binned_by,
        spine=used_spine,
    )
