"""``register()``: the one call behind ``sopi register``, the benchmark and the Slicer module."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, TypeVar

import torch

from ..device import resolve_device
from ..errors import InputError, NoVertebralColumn
from ..geometry import CArmGeometry, nominal_view, params_to_dict
from ..io_xray import XRay, working_xray
from ..render import binned_volume, working_volumes
from ..nets.model_file import LoadedModel
from ..volume import Volume
from .global_search import GlobalStage, global_search, same_hypothesis
from .learned import _fine_stage, _network_stage, load_networks
from .methods import FineStage, NetworkStage, Stage, default_method, get_method, needs_mask, scaled_budgets, single_level
from .optimizers import Monitor, OptimizerResult, adam, cma_es, line_scan, multi_start, powell
from .passes import _Pass, judged_pass, run_passes, stage_loop
from .problem import PoseProblem, default_pivot, exposed_field
from .projectors import SharedProjectors

_A = TypeVar("_A")
_B = TypeVar("_B")

__all__ = ["RegistrationResult", "load_networks", "register"]

_NOT_YET = object()  # a value not computed yet (None is a result)


@dataclass
class RegistrationResult:
    """What a registration found (it never saw a ground truth).

    ``params`` are the paper's parameters of the result relative to the initial pose,
    pivoting about ``pivot_world`` (deg, mm).
    """

    camera_from_world: torch.Tensor
    params: torch.Tensor
    method: str
    time_s: float
    similarity: float
    iterations: int
    converged: bool
    pivot_world: torch.Tensor
    stages: list[dict] = field(default_factory=list)
    xray_preparation: dict = field(default_factory=dict)
    confidence: float = float("nan")  # in [0, 1], from the result alone (sopi.registration.confidence)
    likely_failed: bool = True
    confidence_details: dict = field(default_factory=dict)
    mask_source: str = ""  # "given", "segmented", "bone" (no vertebral column found: every bone of the body) or "none"
    ct_binned_by: tuple[int, int, int] = (1, 1, 1)  # (i, j, k): a CT finer than WORKING_SPACING_MM renders binned
    # the 0/1 spine mask it used on the CT's own grid (given or segmented; None without one); not in RESULT.json
    spine: Volume | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """The ``RESULT.json`` content."""
        return {
            "matrix": self.camera_from_world.tolist(),
            "params": params_to_dict(self.params),
            "method": self.method,
            "time_s": round(self.time_s, 3),
            "similarity": self.similarity,
            "iterations": self.iterations,
            "converged": self.converged,
            "pivot_world_mm": self.pivot_world.tolist(),
            "stages": self.stages,
            "xray_preparation": self.xray_preparation,
            "confidence": round(self.confidence, 4),
            "likely_failed": self.likely_failed,
            "confidence_details": self.confidence_details,
            "mask_source": self.mask_source,
            "ct_binned_by": list(self.ct_binned_by),
        }


def register(
    ct: Volume | str | Path,
    xray: XRay | str | Path,
    *,
    geometry: CArmGeometry | None = None,
    initial_pose: torch.Tensor | None = None,
    view: str | None = None,
    mask: Volume | str | Path | None = None,
    auto_mask: bool | None = None,
    method: str | None = None,
    model: str | Path | LoadedModel | None = None,
    fine_model: str | Path | LoadedModel | None = None,
    models: str | Path | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    step_mm: float = 1.0,
    iteration_scale: float = 1.0,
    pyramid: bool = True,
    prepare: bool = True,
    flip: str = "auto",
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> RegistrationResult:
    """Register an X-ray to a CT.

    Args:
        ct: CT in HU (a :class:`Volume` or a file/DICOM folder). Finer than
            :data:`sopi.render.WORKING_SPACING_MM` along an axis, it is rendered binned (``ct_binned_by``).
        xray: the X-ray (an :class:`XRay` or a file); ``geometry`` overrides its geometry.
        initial_pose: ``camera_from_world`` to start from; else the nominal ``view``
            (``ap`` by default) about the spine centroid (or the CT centre without a mask).
        mask: spine mask or label map on the CT grid (non-zero = spine); ``auto_mask``
            segments it. It sets the pivot and weights the similarity. ``auto_mask=None`` (the
            default) segments it when the method needs one (the global search and the learned
            methods, :func:`~sopi.registration.methods.needs_mask`) and none is given; False never segments.
        method: a name from :data:`sopi.registration.METHODS`; None (the default) runs the global
            search then ``opt`` (``global+opt``), or ``sopi+global+opt`` when both ``model`` and
            ``fine_model`` are given.
        model: the trained RTPI network (file or :class:`sopi.nets.model_file.LoadedModel`)
            for the methods that use one (``rtpi``, ``rtpi+opt``, ``sopi``, ``sopi+opt``).
        fine_model: the trained fine-registration encoders (``fine``, ``sopi``, ``sopi+opt``).
            Learned methods need the spine mask: its centroid is the isocentre the networks
            were trained about.
        models: a folder written by ``sopi prepare`` (:func:`sopi.training.prepare.prepare_models`):
            both networks (so the default method is ``sopi+global+opt``) and, when ``ct`` is the CT it
            was prepared for and no ``mask`` is given, its spine mask.
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: seeds every random choice (CMA-ES samples).
        iteration_scale: multiplies every optimisation stage's iteration budget.
        pyramid: False runs every optimisation stage at the method's finest detector level.
        prepare: mask what the CT cannot explain (outside the field, saturated pixels, metal;
            :func:`sopi.xray_prep.prepare_xray`) and decide an ``"auto"`` polarity the file's
            tags left open by comparing with a DRR; False uses every pixel as read.
        flip: how the X-ray's pixels face (:data:`sopi.xray_orientation.FLIPS`): ``auto`` turns a DICOM
            radiograph whose Patient Orientation runs against the start pose's camera axes (mirrored,
            upside down, turned by 90 deg or mirrored across a diagonal) to them, and keeps other images as
            stored; ``none``, ``left-right``, ``up-down``, ``both``, ``rotated-cw``, ``rotated-ccw``,
            ``diagonal`` or ``anti-diagonal`` say what the stored
            image is. The result's pose is for the image so turned; ``xray_preparation["orientation"]``
            records it (:meth:`sopi.xray_orientation.Orientation.from_record`, whose ``undo`` takes a
            DRR back to the file's orientation).
        progress: called with ``(fraction, message)`` between iterations.
        cancel: polled between iterations; returning True raises :class:`sopi.errors.Cancelled`.
    """
    from ..io import read_ct, read_mask, read_xray
    from ..xray_orientation import FLIPS
    from ..validate import check_ct_content, check_pose_in_front, check_rigid_pose, check_seed, check_xray_signal

    check_seed(seed)
    if flip not in FLIPS:
        raise InputError(f"flip {flip!r} is not one of {FLIPS}")
    prepared = None
    if models is not None:
        from ..training.prepare import read_prepared

        if model is not None or fine_model is not None:
            raise InputError("models: gives both networks; leave out model and fine_model")
        prepared = read_prepared(models)
        model, fine_model = prepared.rtpi, prepared.fine
    if method is None:
        method = default_method(model is not None and fine_model is not None)
    if initial_pose is not None:
        initial_pose = check_rigid_pose(initial_pose, "initial_pose")
    stages = scaled_budgets(get_method(method), iteration_scale)
    if not pyramid:
        stages = single_level(stages)
    started = time.perf_counter()
    networks = load_networks(method, {"rtpi": model, "fine": fine_model}, device)
    ct_volume = ct if isinstance(ct, Volume) else read_ct(ct)
    check_ct_content(ct_volume.data, f"CT {ct}" if not isinstance(ct, Volume) else "CT")
    fixed = xray if isinstance(xray, XRay) else read_xray(xray, geometry=geometry)
    check_xray_signal(fixed.image, f"X-ray {fixed.path or ''}".strip())
    geometry = geometry or fixed.geometry
    if initial_pose is not None:  # before any slow work (segmentation)
        check_pose_in_front(initial_pose, ct_volume.center_world, geometry.sdd_mm, "initial_pose")
    if prepared is not None and mask is None and auto_mask is None:
        mask = prepared.mask_for(ct_volume)
    if auto_mask is None:
        auto_mask = mask is None and needs_mask(method)
    if initial_pose is not None and view is not None:
        raise InputError("give either initial_pose or view, not both")
    for network in networks.values():
        if view is not None and view != network.view:
            raise InputError(f"{network.path.name} was trained for the {network.view!r} view, not {view!r}")
    if geometry is not fixed.geometry:
        fixed = replace(fixed, geometry=geometry)

    def find_spine() -> tuple[Volume | None, str]:
        return _spine_mask(ct_volume, mask, auto_mask, progress, cancel, read_mask)

    given_xray = fixed

    def prepare_view(start: torch.Tensor, reading: str | None = None) -> _PreparedView:
        return _prepared_view(given_xray, ct_volume, start, flip, prepare, resolve_device(device), reading)

    if initial_pose is not None and mask is None and auto_mask:  # the X-ray is prepared while the spine is segmented
        view_ready, (spine, mask_source) = _side_by_side(lambda: prepare_view(initial_pose), find_spine)
    else:
        view_ready, (spine, mask_source) = None, find_spine()
    if spine is not None:  # label maps (vertebra ids) become a 0/1 mask
        spine = spine.with_data((spine.data != 0).to(torch.uint8))
    elif networks:
        raise InputError(f"method {method!r} needs the spine mask (give a mask file, or let it be segmented: no --no-mask)")
    if spine is not None:
        from ..segment import mask_centroid_world

        pivot = mask_centroid_world(spine)
    if initial_pose is None:
        center = pivot if spine is not None else ct_volume.center_world
        start_view = view or next((network.view for network in networks.values()), "ap")
        initial_pose = nominal_view(start_view, center, geometry.source_to_isocenter_mm).camera_from_world
        check_pose_in_front(initial_pose, ct_volume.center_world, geometry.sdd_mm, "initial_pose")  # a given one was checked above
    if spine is None:
        pivot = default_pivot(initial_pose, geometry)
    fixed, orientation, binned_by, attenuation, ct_binned_by, weight, preparation = view_ready or prepare_view(initial_pose)
    geometry = fixed.geometry
    used_spine = spine
    if spine is not None:  # a fine CT renders binned (the pivot above is the full mask's centroid)
        spine = binned_volume(spine, ct_binned_by, "max")

    def with_view(record: dict) -> dict:
        """A view's preparation record with how the X-ray was turned and binned."""
        return {**record, "orientation": orientation, **({"binned_by": binned_by} if binned_by > 1 else {})}

    preparation = with_view(preparation)
    open_readings = [preparation.get("polarity"), *preparation.get("polarity_alternatives", ())]  # the first, then the others
    polarities = [*open_readings, *preparation.get("polarity_if_unexplained", ())]  # then those only tried as a last resort

    projectors = SharedProjectors()  # every pass renders the same voxels
    # a stage's outcome by what it depends on (the pass's X-ray weights, the stage, its place, the poses every stage of
    # the pass after the search started from): a later pass that reaches the same pose runs the same stages again (a
    # wider search that ends at the first search's hypothesis), so it takes their outcomes instead
    finished_stages: dict[tuple, OptimizerResult] = {}
    judged_starts: dict[str, dict] = {"own": {}, "masked": {}}  # the same weights judge the same start
    plain_weight, masked_weight = weight, _NOT_YET

    def run(chosen: tuple, note: str, start: torch.Tensor | None = None, kept_start: bool = False, judge_only: bool = False) -> _Pass:
        problem = PoseProblem(  # a fresh one per pass: adapting to the X-ray changes its weights
            attenuation, fixed.image, geometry, initial_pose.to(torch.float64), pivot, mask=spine, device=resolve_device(device),
            step_mm=step_mm, xray_weight=weight, exposed=exposed_field(fixed), projectors=projectors,
        )
        found = dict(preparation)
        scatter_checked = False  # kept_start: the first stage runs its after_kept_start stages instead (a converged start)
        alternatives: list[torch.Tensor] = []
        pass_weight, starts = weight, []  # the poses this pass's stages after a search started from

        def step(index: int, stage, theta: torch.Tensor, monitor: Monitor):
            nonlocal scatter_checked, kept_start
            if isinstance(stage, GlobalStage):
                proposals = [theta] if index > 0 else []  # an earlier stage's pose (a network's) competes with the search's
                outcome = global_search(problem, stage, monitor, seed + index, proposals=proposals, judged_starts=judged_starts["own" if weight is plain_weight else "masked"])
                kept_start = not outcome.searched
                alternatives[:] = [theta for theta, _ in outcome.hypotheses if not same_hypothesis(theta, outcome.theta)]
                extra = {"hypotheses": [round(value, 4) for _, value in outcome.hypotheses], "searched": outcome.searched,
                         **({"tentative": True} if outcome.tentative else {})}
                if outcome.start_confidence is not None:
                    extra["start_confidence"] = round(outcome.start_confidence, 4)
                return outcome, extra
            if isinstance(stage, NetworkStage):
                return _network_stage(problem, networks["rtpi"], spine, fixed, monitor), {}
            if isinstance(stage, FineStage):
                return _fine_stage(problem, networks["fine"], stage, spine, fixed, theta, monitor), {}
            instead = stage.after_kept_start if kept_start and isinstance(stage, Stage) else ()
            if instead:
                kept_start = False
            factor = stage.level_factor(max(geometry.rows, geometry.cols))
            if prepare and index > 0 and not scatter_checked:  # the pose is close enough to judge scatter
                found.update(problem.adapt_to_xray(theta, factor, stage.measure))
                scatter_checked = True
            if prepare and problem.FIT_BONE_CONTRAST and index > 0 and index == len(chosen) - 1:  # the last stage: closest yet
                found["bone_contrast_estimate"] = problem.estimate_bone_contrast(theta, factor, stage.measure)
                found["scatter_to_primary_estimate"] = problem.scatter_to_primary
            starts.append(theta.detach().to(torch.float64).numpy().tobytes())
            if instead:
                return _run_in_turn(problem, instead, theta, seed + index, monitor, note, " (kept start)")
            key = (id(pass_weight), index, len(chosen), stage, tuple(starts))
            if key in finished_stages:  # the problem was adapted above from the same poses, as in the pass that ran it
                outcome = finished_stages[key]
                return replace(outcome, theta=outcome.theta.clone(), iterations=0, evaluations=0), {"reused": True}
            finished_stages[key] = _run_stage(problem, stage, theta, seed + index, monitor)
            return finished_stages[key], {}

        if judge_only:  # start judged, the problem adapted to the X-ray there as the stages after the first would adapt it
            adapting = next((stage for stage in chosen[1:] if isinstance(stage, Stage)), None)
            if prepare and adapting is not None:
                found.update(problem.adapt_to_xray(start, adapting.level_factor(max(geometry.rows, geometry.cols)), adapting.measure))
            return judged_pass(problem, start, note, assess, found)
        finished = stage_loop(problem, chosen, note, step, assess, found, progress, cancel, start=start)
        finished.alternatives = alternatives
        return finished

    def second_look(mask: bool = True) -> bool:
        """From now on, the straight instruments' sides are masked too; False when none is found. ``mask=False``:
        back to the X-ray's own weights."""
        nonlocal weight, masked_weight
        from ..xray_prep import without_straight_instruments

        if not mask:
            weight = plain_weight
            preparation.pop("straight_instruments_fraction", None)
            return True
        if masked_weight is _NOT_YET:  # found once, whatever the passes ask
            masked_weight = None if plain_weight is None else without_straight_instruments(fixed.image, plain_weight)
        if masked_weight is None:
            return False
        preparation["straight_instruments_fraction"] = round(float((plain_weight > 0).float().mean() - (masked_weight > 0).float().mean()), 4)
        weight = masked_weight
        return True

    readings_kept: dict[str, tuple] = {}  # each reading's X-ray, weights, record and judged starts, once prepared
    reading_now = polarities[0]

    def other_readings(index: int, unexplained: bool = False) -> bool:
        """From now on, the X-ray read as ``polarities[index]`` says (0: as first decided, then the alternatives the
        polarity judgement left open, then, where ``unexplained``, those it left closed); False where there is no such
        reading."""
        nonlocal fixed, weight, plain_weight, masked_weight, preparation, judged_starts, reading_now
        if index >= len(polarities) or (index >= len(open_readings) and not unexplained):
            return False
        target = polarities[index]
        readings_kept[reading_now] = (fixed, plain_weight, masked_weight, preparation, judged_starts)
        if target not in readings_kept:
            view = prepare_view(initial_pose, target)
            judgement = {key: value for key, value in preparation.items() if key.startswith("polarity_scores")}
            against = index >= len(open_readings)
            record = with_view({**judgement, **view.preparation, "polarity_alternatives": [name for name in open_readings if name != target],
                                "polarity_if_unexplained": [name for name in polarities[len(open_readings):] if name != target],
                                "polarity_source": "the registration: " + ("no reading the cues chose explained the image" if against
                                                                           else "the edges left it open"),
                                **({"polarity_against_the_cues": True} if against else {})})
            readings_kept[target] = (view.fixed, view.weight, _NOT_YET, record, {"own": {}, "masked": {}})
        fixed, plain_weight, masked_weight, preparation, judged_starts = readings_kept[target]
        weight, reading_now = plain_weight, target
        return True

    from .confidence import assess

    final = run_passes(run, stages, second_look, judge=assess, other_readings=other_readings if prepare else None)
    if progress is not None:
        progress(1.0, "done")
    return RegistrationResult(
        camera_from_world=final.problem.pose(final.theta),
        params=final.theta,
        method=method,
        time_s=time.perf_counter() - started,
        similarity=final.similarity,
        iterations=final.iterations,
        converged=final.converged,
        pivot_world=pivot,
        stages=final.records,
        xray_preparation=final.preparation,
        confidence=final.assessment.confidence,
        likely_failed=final.assessment.likely_failed,
        confidence_details=final.assessment.details(),
        mask_source=mask_source,
        ct_binned_by=ct_binned_by,
        spine=used_spine,
    )


class _PreparedView(NamedTuple):
    """The X-ray as registration uses it, and the CT's volume it is compared with (:func:`_prepared_view`)."""

    fixed: XRay  # its geometry is the working detector's
    orientation: dict
    binned_by: int
    attenuation: Volume
    ct_binned_by: tuple[int, int, int]
    weight: torch.Tensor | None
    preparation: dict


def _prepared_view(fixed: XRay, ct: Volume, initial_pose: torch.Tensor, flip: str, prepare: bool, device: torch.device,
                   reading: str | None = None) -> _PreparedView:
    """The X-ray turned to ``initial_pose``'s camera axes (``flip``), on the working detector and, with ``prepare``,
    prepared against the CT's attenuation (binned where the CT is fine, :func:`sopi.render.working_volumes`), an
    unsettled polarity judged or, given ``reading``, so read."""
    from ..xray_orientation import orient_xray

    fixed, orientation = orient_xray(fixed, initial_pose, flip)
    fixed, binned_by = working_xray(fixed)
    attenuation, _, ct_binned_by = working_volumes(ct, None)
    weight, preparation = None, {}
    if prepare:
        from .preparation import prepare_fixed

        fixed, weight, preparation = prepare_fixed(fixed, attenuation, initial_pose, device, reading)
    return _PreparedView(fixed, orientation, binned_by, attenuation, ct_binned_by, weight, preparation)


def _side_by_side(first: Callable[[], _A], second: Callable[[], _B]) -> tuple[_A, _B]:
    """``(first(), second())`` with ``second`` run in a thread of its own meanwhile (segmenting, which holds Python's lock
    little, beside the X-ray's preparation in torch). Both finish before anything is raised; ``first``'s error wins."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="sopi-mask") as pool:
        later = pool.submit(second)
        done = first()  # an error here is raised once the thread is done (leaving the with block waits for it)
        return done, later.result()


def _spine_mask(ct, mask, auto_mask, progress, cancel, read_mask) -> tuple[Volume | None, str]:
    """``(mask or None, where it came from)``: see :attr:`RegistrationResult.mask_source`."""
    if mask is not None and auto_mask:
        raise InputError("give either a mask or auto_mask, not both")
    from ..validate import check_nonempty_mask

    if isinstance(mask, Volume):
        check_nonempty_mask(mask.data, "mask")
        return mask, "given"
    if mask is not None:
        return read_mask(mask, ct), "given"
    if not auto_mask:
        return None, "none"
    from ..segment import bone_mask, segment_spine

    try:
        return segment_spine(ct, progress=None if progress is None else lambda f, m: progress(0.0, f"segmenting spine: {m}"), cancel=cancel), "segmented"
    except NoVertebralColumn as error:  # a CT in HU with bone: register on all of its bone rather than not at all
        warnings.warn(f"{error}; registering with every bone of the body as the mask instead (give a spine mask for a better start)",
                      UserWarning, stacklevel=3)
        return bone_mask(ct), "bone"


def _run_in_turn(problem: PoseProblem, stages: tuple[Stage, ...], theta: torch.Tensor, seed: int, monitor: Monitor,
                 note: str, why: str) -> tuple[OptimizerResult, dict]:
    """Run ``stages`` one after the other from ``theta`` as one stage of the method: each reports progress under its
    own label (``note``, the label, ``why``) in its share of ``monitor``'s range. Returns where the last ended, with
    every stage's iterations and renders, and the record's ``stage`` naming them all."""
    outcomes, width = [], (monitor.end_fraction - monitor.start_fraction) / len(stages)
    for part, one in enumerate(stages):
        shared = replace(monitor, start_fraction=monitor.start_fraction + part * width,
                         end_fraction=monitor.start_fraction + (part + 1) * width, label=f"{note}{one.label}{why}")
        outcomes.append(_run_stage(problem, one, outcomes[-1].theta if outcomes else theta, seed, shared))
    last = outcomes[-1]
    combined = OptimizerResult(last.theta, last.loss, sum(one.iterations for one in outcomes),
                               sum(one.evaluations for one in outcomes), last.converged)
    return combined, {"stage": note + " + ".join(one.label for one in stages) + why}


def _run_stage(problem: PoseProblem, stage: Stage, theta: torch.Tensor, seed: int, monitor: Monitor):
    scale = torch.tensor([stage.scale[0]] * 3 + [stage.scale[1]] * 3, dtype=torch.float64)

    factor = stage.level_factor(max(problem.geometry.rows, problem.geometry.cols))

    def loss(candidates: torch.Tensor) -> torch.Tensor:
        return -problem.similarity(candidates, factor, stage.measure)

    def optimize(start: torch.Tensor):
        if stage.optimizer == "cma-es":
            return cma_es(
                loss, start, scale, generations=stage.budget, population=stage.population, sigma=stage.sigma, seed=seed,
                patience=stage.patience, restarts=stage.restarts, monitor=monitor,
            )
        if stage.optimizer == "adam":
            return adam(loss, start, scale, iterations=stage.budget, learning_rate=stage.learning_rate, patience=stage.patience, monitor=monitor)
        if stage.optimizer == "powell":
            return powell(loss, start, scale, evaluations=stage.budget, monitor=monitor)
        if stage.optimizer == "depth-scan":  # along the ray through the pivot: depth alone, the spine's image only scales
            return line_scan(loss, start, problem.depth_direction(start) * stage.scale[1], half_steps=stage.budget, monitor=monitor)
        raise InputError(f"unknown optimizer {stage.optimizer!r}")

    problem.hold_region(theta if stage.hold_region else None)
    problem.hold_ct_edges(theta if stage.hold_ct_edges and PoseProblem.LEAVE_OUT_CT_EDGES else None)  # where the stage starts
    problem.hold_window(theta if stage.spine_window else None, factor)
    try:
        if stage.starts > 1:
            return multi_start(optimize, theta, scale, starts=stage.starts, seed=seed)
        return optimize(theta)
    finally:
        problem.hold_window(None)
        problem.hold_region(None)
        problem.hold_ct_edges(None)
