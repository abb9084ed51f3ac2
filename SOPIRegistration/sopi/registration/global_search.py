"""Training-free global initialisation: search the whole plausible pose range, keep hypotheses, refine them.

Only the two out-of-plane rotations need new renders. For each ``(rx, ry)`` on a grid the
CT is rendered once onto a *search detector*: the working detector extended on every
side so that it holds the projection of the whole spine plus half an X-ray. The X-ray,
rotated in its plane (``rz``) and scaled (depth, close to a scale change at the
isocentre), is then matched at every shift of that DRR at once by FFT (the derivatives'
normalised correlation, :func:`sopi.template_matching.masked_ncc_maps`). The matches are ranked twice: with the
derivatives as they are, and with both images' derivatives scaled towards unit length, so that an edge counts by its
direction, not its contrast (:func:`sopi.similarity.unit_gradients`): an instrument's strong edges then drown the
spine's less. Each ranking finds poses the other misses (``GlobalStage.orientation_hypotheses``). So in-plane
rotation, depth, in-plane translation and *where along the spine the X-ray was taken* cost
no renders.

The start is refined first (a short CMA-ES on the working detector). When that refined start
is already confidently right (:func:`sopi.registration.confidence.assess` after ``judge_generations``,
and again after ``rejudge_generations`` when not yet; ``accept_start_above``) it is the answer and
nothing is searched: a start within a few degrees and millimetres (the paper's protocol) costs about
110 renders instead of 750. The start hypothesis
itself is that refinement after its first ``refine_generations``, like every other hypothesis.

Otherwise the best matches become poses (a turn of the camera about the source that brings
the match to the principal point, the in-plane turn, a shift in depth), distinct ones are
kept as hypotheses with the refined start (so a start that was already close is never lost),
and each is refined the same way. Every X-ray is aimed at the spine, so only matches whose
window shows the spine count (with a mask: the spine in view, as :mod:`sopi.registration.confidence`
checks a result), and a refinement that carries a hypothesis out of view drops it. The refined start stays the answer unless another
hypothesis is clearly more similar (``start_margin``).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..distances import _skew
from ..geometry import CArmGeometry, project_points, rigid, transform_points
from ..similarity import image_gradients, unit_gradients
from ..template_matching import gradient_ncc_maps, masked_ncc_maps, top_peaks
from .confidence import START_COEFFICIENTS, Assessment, assess, probe_renders
from .optimizers import Monitor, OptimizerResult, cma_es
from .problem import PoseProblem
from .spine_footprint import SpineInView, SpineMaps

__all__ = ["ACCEPT_START_ABOVE", "TENTATIVE_START_ABOVE", "GlobalOutcome", "GlobalStage", "global_search", "gradient_templates", "judge_start", "same_hypothesis",
           "search_rotations"]


_FFT_SCORES = {"masked-ncc": masked_ncc_maps, "joint-gradient": gradient_ncc_maps}
#: A ranking's best matches read, per hypothesis wanted from it, for distinct ones (most are the same pose again).
_READ_PER_HYPOTHESIS = 50

#: The refined start's confidence at which the search is skipped: about twice the highest that a refined far or
#: wide start reached (0.106 on 240 of them: clean and realistic X-rays of three CTs, seeds 0 and 1). It was the
#: likely-failed threshold, 0.5, until 90 paper cases (clean and realistic, three CTs) kept 60 starts at 0.2
#: instead of 33 with the same successes and half the median time (docs/benchmarks.md). A start kept wrongly is
#: still caught where its result is flagged: the wider second pass always searches.
ACCEPT_START_ABOVE = 0.2

#: A refined start judged at least this confident, though under ACCEPT_START_ABOVE, is kept tentatively: ``opt``'s
#: stages run from it as from a kept start, and the search runs only when their result is flagged likely failed.
#: On 179 realistic cases of four CTs, every judged wide start scored at most 0.067 (80 cases; the one kept
#: tentatively that ended trusted but wrong, 13 mm off, scored 0.009); the 10 paper starts of 99 judged between 0.08
#: and 0.2 all ended within 2 mm as before, 6 of them without a search, 2-3 times faster (docs/benchmarks.md, 2026-12-06).
TENTATIVE_START_ABOVE = 0.08


@dataclass(frozen=True)
class GlobalStage:
    """Settings of the global search (angles in degrees, distances in mm).

    ``detector_px``: the longest side of the working X-ray during the FFT search;
    ``refine_px``: the same for the refinement of the hypotheses.
    """

    out_of_plane_deg: float = 40.0  # beyond the +-30 deg a clinician would accept: poses at the edge (rx 30, ry 23 deg) were missed with 30
    out_of_plane_step_deg: float = 10.0
    # ry (about the detector's columns: the body's long axis in the nominal views, so the C-arm's
    # orbit and the patient's roll) reaches this far; None: as far as out_of_plane_deg
    roll_deg: float | None = None
    # only rolls beyond this are rendered (a second pass skips what the first searched); None: all
    roll_beyond_deg: float | None = None
    # a second search reaches this far in ry when the first result is flagged likely failed
    # (sopi.registration.methods.widened): a 70 deg roll (a wide start's tail) was missed at 40
    wider_roll_deg: float = 70.0
    # the centres of the grid's squares are rendered too within this half-range (None: not): no pose is then over half a
    # step from a rendered one, not 0.71 of one; two held-out wide misses were found so (docs/benchmarks.md)
    staggered_deg: float | None = 30.0
    in_plane_deg: float = 30.0
    # and this far in the in-plane turn (every roll rendered again): a wide start with rz -44 deg failed on four CTs
    wider_in_plane_deg: float = 60.0
    in_plane_step_deg: float = 6.0
    depth_mm: float = 100.0
    depth_steps: int = 7
    detector_px: int = 48
    # the search renders the CT block-averaged to voxels of at most this size (mm; PoseProblem.attenuation_projector);
    # None: the working volume itself. At 3 mm the full-size chest CT's search took 2.3 s less (15.1 -> 12.8 s), but on
    # 40 realistic wide starts of three CTs it ended under 10 mm in 30 against 32 (docs/benchmarks.md, 2026-12-07)
    search_voxel_mm: float | None = None
    max_extent: float = 6.0  # the search detector is at most this many working detectors wide and high
    peaks_per_map: int = 2
    hypotheses: int = 6
    refine_px: int = 64
    refine_generations: int = 8
    refine_population: int = 12
    refine_scale: tuple[float, float] = (3.0, 8.0)
    # the refined start is kept unless another hypothesis beats its similarity by more than this: on
    # realistic X-rays, near ties between the start and a far-off pose went to the far-off one
    start_margin: float = 0.05
    # the FFT matching's score: "masked-ncc" (per derivative, centred windows: sopi.template_matching.masked_ncc_maps)
    # or "joint-gradient" (both derivatives as one vector, raw windows: gradient_ncc_maps, 2.9x faster; it found
    # the truth among the hypotheses as often, but moved single hard cases both ways, docs/benchmarks.md)
    fft_score: str = "masked-ncc"
    # the X-ray's and the search DRRs' derivatives scaled towards unit length before the matches are ranked
    # (sopi.similarity.unit_gradients with this floor, in median derivative lengths); None: as they are. At 2 the
    # realistic wide starts of seed 0 and 1 ended under 10 mm in 40 of 50 against 42 (docs/benchmarks.md, 2026-12-07)
    gradient_floor: float | None = None
    # besides the `hypotheses` best distinct matches, this many of a second ranking, with the derivatives scaled
    # towards unit length (floor `orientation_floor`): an edge counts by its direction, so an instrument's or a
    # blade's strong edges outweigh the spine's less, and each ranking finds poses the other misses
    orientation_hypotheses: int = 2
    orientation_floor: float = 2.0
    # the refined start is the answer, with no search, when its confidence (sopi.registration.confidence.assess
    # with START_COEFFICIENTS) reaches this; None: always search (ACCEPT_START_ABOVE)
    accept_start_above: float | None = ACCEPT_START_ABOVE
    # the start is judged after this many generations of its refinement (same seed: its first
    # refine_generations are the start hypothesis's own). 20 kept the start of 27 of 30 clean paper
    # cases instead of 17, but one realistic case then lost the search's better depth (docs/benchmarks.md)
    judge_generations: int = 8
    # a start not trusted then is refined on to this many generations and judged again before anything is searched
    # (None: judged once). A full-size chest CT's realistic paper starts were still 2-4 deg off after 8 generations and
    # scored 0.05-0.18, 0.48-0.80 at the truth; by 24 most passed (docs/benchmarks.md)
    rejudge_generations: int | None = 24
    # a start judged at least this confident (but under accept_start_above) is kept tentatively: the stages after the
    # search run from it as from a kept start, and only when their result is flagged likely failed is the search run
    # after all (sopi.registration.passes.run_passes); None: never
    tentative_start_above: float | None = TENTATIVE_START_ABOVE
    measure: str = "gradient-ncc"
    kind: str = field(default="global", init=False)

    @property
    def label(self) -> str:
        return "global search"

    @property
    def searched_hypotheses(self) -> int:
        """How many matches a search refines besides its start (and proposals): both rankings'."""
        return self.hypotheses + self.orientation_hypotheses


@dataclass
class GlobalOutcome(OptimizerResult):
    """The best refined hypothesis and every refined hypothesis ``(theta, similarity)``, best first;
    ``renders`` (and ``evaluations``) count every DRR rendered, the search's and the refinements'.
    ``start_confidence``: the refined start's confidence when the stage judged it (None otherwise);
    ``searched``: False when that confidence made the search unnecessary; ``tentative``: the start was kept only
    tentatively (``GlobalStage.tentative_start_above``)."""

    hypotheses: list[tuple[torch.Tensor, float]] = field(default_factory=list)
    renders: int = 0
    start_confidence: float | None = None
    searched: bool = True
    tentative: bool = False


def global_search(
    problem: PoseProblem, stage: GlobalStage, monitor: Monitor, seed: int = 0, proposals: Sequence[torch.Tensor] = (),
    judged_starts: dict | None = None,
) -> GlobalOutcome:
    """Search ``stage``'s pose range about ``problem``'s initial pose; refine the best distinct matches.

    ``proposals``: thetas from elsewhere (a network's estimate) refined and ranked with the
    search's own hypotheses; like them, they must beat the refined start by ``start_margin``.
    ``judged_starts``: a cache of judged starts and refined hypotheses shared by the passes of one registration, valid
    only for ``problem``'s X-ray, weights and start (the caller keeps one per X-ray weighting): a start kept tentatively
    and then searched after all is not refined and judged twice, and a wider search that chooses a hypothesis an earlier
    search refined, at the same place and seed, takes that refinement (uncounted) instead of running it again.
    """
    score = _FFT_SCORES.get(stage.fft_score)
    if score is None:
        raise ValueError(f"GlobalStage.fft_score: expected one of {sorted(_FFT_SCORES)}, got {stage.fft_score!r}")
    rotations = search_rotations(stage)  # (R, 2): rx, ry
    origin = torch.zeros(6, dtype=torch.float64)  # theta of the start
    proposed = [theta.reshape(6).to(torch.float64) for theta in proposals]
    proposed = [theta for theta in proposed if not same_hypothesis(theta, origin)]
    steps = 1 + len(rotations) + len(proposed) + stage.searched_hypotheses  # progress: the start's refinement, the search renders, the others'
    monitor.report(0, steps)

    refine = _refiner(problem, stage, seed, monitor.cancel)
    start_confidence, judged_renders, cached = None, 0, None
    if stage.accept_start_above is None:
        first = refine(origin, 0)  # the start itself competes too (chosen[0] below)
    else:
        key = (seed, replace(stage, tentative_start_above=None))  # the same stage judges the same start
        cached = None if judged_starts is None else judged_starts.get(key)
        judged, assessment, judgements = cached if cached is not None else _judged_start(problem, stage, refine)
        if judged_starts is not None:
            judged_starts[key] = (judged, assessment, judgements)
        start_confidence = assessment.confidence
        tentative = stage.tentative_start_above is not None and stage.tentative_start_above <= start_confidence < stage.accept_start_above
        if start_confidence >= stage.accept_start_above or tentative:
            renders = 0 if cached is not None else judged.evaluations + judgements * probe_renders(problem)
            return GlobalOutcome(judged.theta, judged.loss, judged.iterations, renders, True, hypotheses=[(judged.theta, -judged.loss)],
                                 renders=renders, start_confidence=start_confidence, searched=False, tentative=tentative)
        first = judged.checkpoints.get(stage.refine_generations, judged)  # the start hypothesis, as refined without judging
        judged_renders = 0 if cached is not None else judged.evaluations - first.evaluations + judgements * probe_renders(problem)
    monitor.report(1, steps)

    longest = max(problem.geometry.rows, problem.geometry.cols)  # the search, built only when it runs
    level = problem.level(max(1, round(longest / stage.detector_px)))
    small = level.projector.geometry
    search = _search_detector(problem, small, stage.max_extent)
    # the attenuation alone: the search matches the DRR's edges, the spine channel would be rendered for nothing
    projector = problem.attenuation_projector(search, level.projector.step_mm, stage.search_voxel_mm)
    angles = _grid(stage.in_plane_deg, stage.in_plane_step_deg)
    depth = problem.geometry.source_to_isocenter_mm
    scales = torch.linspace(math.log((depth - stage.depth_mm) / depth), math.log((depth + stage.depth_mm) / depth), stage.depth_steps).exp().tolist()
    warps = list(itertools.product(angles, scales))
    rankings = [(stage.gradient_floor, stage.hypotheses)]  # (floor, matches wanted from it)
    if stage.orientation_hypotheses > 0:
        rankings.append((stage.orientation_floor, stage.orientation_hypotheses))
    raw, masks = gradient_templates(level.fixed, level.weight, small, warps)  # the X-ray warped once for every ranking
    kernels = [raw if floor is None else torch.stack(unit_gradients(raw[:, 0], raw[:, 1], floor), dim=1) for floor, _ in rankings]
    spine_maps = SpineMaps(problem, search, small)
    candidates: list[list[tuple]] = [[] for _ in rankings]  # per ranking: (score, rotation index, warp index, row, col)
    for start in range(0, len(rotations), 8):
        chunk = rotations[start:start + 8]
        theta = torch.zeros(len(chunk), 6, dtype=torch.float64)
        theta[:, :2] = chunk
        with torch.no_grad():
            poses = problem.pose(theta).to(problem.device)
            drr = projector(poses)
            gradients = image_gradients(drr.to(torch.float32))
            maps = torch.cat([score(torch.stack(gradients if floor is None else unit_gradients(*gradients, floor), dim=1), templates, masks)
                              for (floor, _), templates in zip(rankings, kernels)], dim=1)  # (B, rankings x warps, ., .)
            maps = spine_maps.in_view_only(maps, poses)  # the spine's footprint projected once for every ranking
            # only a ranking's best _READ_PER_HYPOTHESIS x count matches are ever read: a map whose best score is under
            # the ranking's worst of those so far adds none, and its peaks need not be found (the same candidates read)
            bars = [_kept_bar(ranked, _READ_PER_HYPOTHESIS * count) for ranked, (_, count) in zip(candidates, rankings)]
            bars = torch.tensor(bars, dtype=maps.dtype)
            contending = maps.amax(dim=(-2, -1)) >= bars.repeat_interleave(len(warps))
            values, rows, cols = top_peaks(maps[contending], stage.peaks_per_map, separation_px=3)
        found = torch.isfinite(values)  # a map with no match in view has none
        where = torch.nonzero(contending)[torch.nonzero(found)[:, 0]]  # (rotation in chunk, ranking x warp) of each
        for (r, k), value, row, col in zip(where.tolist(), values[found].tolist(), rows[found].tolist(), cols[found].tolist()):
            candidates[k // len(warps)].append((value, start + r, k % len(warps), row, col))
        monitor.report(1 + min(start + 8, len(rotations)), steps)

    reference = problem.reference
    pivot_camera_depth = float(transform_points(reference.camera_from_world, reference.isocenter_world[None])[0, 2])
    chosen: list[torch.Tensor] = [origin, *proposed]  # the start itself competes too
    for ranked, (_, count) in zip(candidates, rankings):  # each ranking's best distinct matches, after the ones before
        ranked.sort(key=lambda item: -item[0])
        wanted = len(chosen) + count
        for _, r, k, row, col in ranked[: _READ_PER_HYPOTHESIS * count]:
            if len(chosen) == wanted:
                break
            theta0 = torch.zeros(6, dtype=torch.float64)
            theta0[:2] = rotations[r]
            angle, scale = warps[k]
            principal = small.principal_point_px
            offset_px = (col + principal[0] - search.principal_point_px[0], row + principal[1] - search.principal_point_px[1])
            pose = _matched_pose(problem.pose(theta0), search, offset_px, angle, scale, pivot_camera_depth)
            theta = reference.params(pose)
            if all(not same_hypothesis(theta, other) for other in chosen):
                chosen.append(theta)

    refined, iterations, evaluations = [], 0, 0
    in_view = SpineInView(problem, spine_maps.footprint)
    for index, theta in enumerate(chosen):
        if index == 0:
            outcome, counted = first, cached is None  # a cached start was refined (and counted) by an earlier pass
        else:
            outcome, counted = _refined(refine, theta, index, judged_starts, (seed, *_refinement_settings(stage)))
        if index == 0 or in_view(outcome.theta):  # a refinement can carry a match out of view too
            refined.append((outcome.theta, -outcome.loss))
        if counted:
            iterations, evaluations = iterations + outcome.iterations, evaluations + outcome.evaluations
        monitor.report(1 + len(rotations) + index, steps)
    start_theta, start_similarity = refined[0]  # chosen[0] is the start
    refined.sort(key=lambda item: -item[1])
    best_theta, best_similarity = refined[0]
    if best_similarity <= start_similarity + stage.start_margin:
        best_theta, best_similarity = start_theta, start_similarity
    renders = len(rotations) + evaluations + judged_renders
    return GlobalOutcome(best_theta, -best_similarity, iterations, renders, True, hypotheses=refined, renders=renders,
                         start_confidence=start_confidence)


def _kept_bar(ranked: list[tuple], count: int) -> float:
    """The ``count``-th best score among ``ranked`` candidates (``-inf`` while there are fewer): a match scoring
    under it can never be among the ``count`` best."""
    if len(ranked) < count:
        return -math.inf
    return heapq.nlargest(count, (item[0] for item in ranked))[-1]


def judge_start(problem: PoseProblem, stage: GlobalStage, seed: int = 0) -> tuple[OptimizerResult, Assessment]:
    """The start refined as :func:`global_search` refines it before judging it (``judge_generations``, and on to
    ``rejudge_generations`` when not trusted then), and its last assessment under
    :data:`~sopi.registration.confidence.START_COEFFICIENTS`: its ``confidence`` is what ``stage.accept_start_above``
    is compared with."""
    judged, assessment, _ = _judged_start(problem, stage, _refiner(problem, stage, seed, None))
    return judged, assessment


def _judged_start(problem: PoseProblem, stage: GlobalStage, refine) -> tuple[OptimizerResult, Assessment, int]:
    """The refined start, its last assessment and how many assessments were made. One CMA-ES run: it stops at the
    first judgement that trusts it; the generations before a judgement are the same whether it goes on or not."""
    first = max(stage.judge_generations, stage.refine_generations)
    points = [first] if stage.rejudge_generations is None or stage.rejudge_generations <= first else [first, stage.rejudge_generations]
    judgements: list[tuple[torch.Tensor, Assessment]] = []

    def trusted(checkpoint: OptimizerResult) -> bool:
        if checkpoint.iterations not in points:
            return False
        judgements.append((checkpoint.theta, assess(problem, checkpoint.theta, coefficients=START_COEFFICIENTS)))
        return stage.accept_start_above is not None and judgements[-1][1].confidence >= stage.accept_start_above

    judged = refine(torch.zeros(6, dtype=torch.float64), 0, points[-1], (stage.refine_generations, *points), stop_at=trusted)
    if not judgements or not torch.equal(judgements[-1][0], judged.theta):  # it moved on and converged before the next judgement
        judgements.append((judged.theta, assess(problem, judged.theta, coefficients=START_COEFFICIENTS)))
    return judged, judgements[-1][1], len(judgements)


def _refined(refine, theta: torch.Tensor, index: int, cache: dict | None, context: tuple) -> tuple[OptimizerResult, bool]:
    """``(refine(theta, index), True)``, or ``(its outcome, False)`` where an earlier search of the registration
    (``cache``, keyed with ``context``: the search's seed and refinement settings) already refined ``theta`` there."""
    if cache is None:
        return refine(theta, index), True
    key = ("refined", *context, index, theta.detach().cpu().numpy().tobytes())
    if key in cache:
        return cache[key], False
    cache[key] = refine(theta, index)
    return cache[key], True


def _refinement_settings(stage: GlobalStage) -> tuple:
    """What a hypothesis's refinement depends on beyond the problem, its theta and its seed."""
    return stage.refine_px, stage.refine_generations, stage.refine_population, stage.refine_scale, stage.measure


def _refiner(problem: PoseProblem, stage: GlobalStage, seed: int, cancel) -> Callable[..., OptimizerResult]:
    """``refine(theta, index, generations=stage.refine_generations, checkpoints=(), stop_at=None)``: the short CMA-ES of a
    hypothesis on the ``stage.refine_px`` detector (seed ``seed + index``), within two steps of
    ``stage.refine_scale`` of ``theta``."""
    longest = max(problem.geometry.rows, problem.geometry.cols)
    factor = max(1, round(longest / stage.refine_px))
    spread = torch.tensor([stage.refine_scale[0]] * 3 + [stage.refine_scale[1]] * 3, dtype=torch.float64)
    quiet = Monitor(None, cancel)

    def loss(thetas: torch.Tensor) -> torch.Tensor:
        return -problem.similarity(thetas, factor, stage.measure)

    def refine(theta: torch.Tensor, index: int, generations: int | None = None, checkpoints: Sequence[int] = (),
               stop_at: Callable[[OptimizerResult], bool] | None = None) -> OptimizerResult:
        return cma_es(loss, theta, spread, generations=generations or stage.refine_generations, population=stage.refine_population,
                      sigma=1.0, bound=2.0, seed=seed + index, monitor=quiet, checkpoints=checkpoints, stop_at=stop_at)

    return refine


def search_rotations(stage: GlobalStage) -> torch.Tensor:
    """``(R, 2)`` float64 ``(rx, ry)`` (deg) the search renders: the square grid of ``out_of_plane_step_deg`` within
    ``out_of_plane_deg`` (rx) and the roll range (ry), then the centres of its squares within ``staggered_deg`` on
    both axes; rolls within ``roll_beyond_deg`` left out (what a first pass searched)."""
    step = stage.out_of_plane_step_deg
    tilts = _grid(stage.out_of_plane_deg, step)
    rolls = _grid(stage.out_of_plane_deg if stage.roll_deg is None else stage.roll_deg, step)
    nodes = list(itertools.product(tilts, rolls))
    if stage.staggered_deg is not None:
        centres = [value + step / 2 for value in _grid(stage.staggered_deg, step) if abs(value + step / 2) <= stage.staggered_deg + 1e-9]
        furthest_roll = max(rolls) + 1e-9
        nodes += [(tilt, roll) for tilt, roll in itertools.product(centres, centres)
                  if abs(tilt) <= stage.out_of_plane_deg + 1e-9 and abs(roll) <= furthest_roll]
    if stage.roll_beyond_deg is not None:
        nodes = [(tilt, roll) for tilt, roll in nodes if abs(roll) > stage.roll_beyond_deg + 1e-9]
    return torch.tensor(nodes, dtype=torch.float64).reshape(-1, 2)


def _grid(half_range: float, step: float) -> list[float]:
    """Symmetric values ``0, +-step, ...`` within ``+-half_range``."""
    count = int(math.floor(half_range / step + 1e-9))
    return [step * i for i in range(-count, count + 1)]


def same_hypothesis(theta: torch.Tensor, other: torch.Tensor, degrees: float = 6.0, millimetres: float = 12.0) -> bool:
    """Whether two thetas (deg, mm about the same initial pose) are within ``degrees`` and ``millimetres`` on every
    axis: one hypothesis, refined once."""
    difference = (theta - other).abs()
    return bool(difference[:3].max() < degrees and difference[3:].max() < millimetres)


def _search_detector(problem: PoseProblem, small: CArmGeometry, max_extent: float) -> CArmGeometry:
    """The working detector extended to hold the projected spine (or CT) plus half an X-ray on every side.

    Same pixel spacing and principal ray as ``small``.
    """
    support = problem.mask if problem.mask is not None else problem.volume
    index = torch.nonzero(support.data != 0)  # attenuation is never negative: != 0 is the body's support box
    low, high = index.min(0).values.flip(-1).to(torch.float64), index.max(0).values.flip(-1).to(torch.float64)
    corners = torch.tensor(list(itertools.product(*zip(low.tolist(), high.tolist()))), dtype=torch.float64)
    world = corners @ support.world_from_index[:3, :3].T + support.world_from_index[:3, 3]
    pixels = project_points(problem.reference.camera_from_world, small, world)
    half_cols, half_rows = small.cols // 2, small.rows // 2
    left = min(0.0, float(pixels[:, 0].min())) - half_cols
    right = max(small.cols - 1.0, float(pixels[:, 0].max())) + half_cols
    top = min(0.0, float(pixels[:, 1].min())) - half_rows
    bottom = max(small.rows - 1.0, float(pixels[:, 1].max())) + half_rows
    reach_cols, reach_rows = (max_extent - 1) / 2 * small.cols, (max_extent - 1) / 2 * small.rows
    left, right = max(left, -reach_cols), min(right, small.cols - 1 + reach_cols)
    top, bottom = max(top, -reach_rows), min(bottom, small.rows - 1 + reach_rows)
    first_col, first_row = math.floor(left), math.floor(top)
    return small.padded(-first_col, -first_row, math.ceil(right) - (small.cols - 1), math.ceil(bottom) - (small.rows - 1))


def gradient_templates(image: torch.Tensor, weight: torch.Tensor | None, geometry: CArmGeometry, warps: list[tuple[float, float]]):
    """Sobel derivatives ``(K, 2, h, w)`` of the X-ray turned by ``angle`` (deg) and scaled by ``scale``
    about the principal point, and their masks ``(K, h, w)`` (1 where the X-ray is valid)."""
    rows, cols = image.shape
    du, dv = geometry.pixel_spacing_mm
    cu, cv = geometry.principal_point_px
    row_grid, col_grid = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij")
    x_mm, y_mm = (col_grid - cu) * du, (row_grid - cv) * dv
    grids = []
    for angle, scale in warps:  # template(p) = image(W^-1 p), W = scale * rotation(angle) about the principal point
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        source_x = (cos * x_mm + sin * y_mm) / scale
        source_y = (-sin * x_mm + cos * y_mm) / scale
        source_col, source_row = source_x / du + cu, source_y / dv + cv
        grids.append(torch.stack([(2 * source_col + 1) / cols - 1, (2 * source_row + 1) / rows - 1], dim=-1))
    grid = torch.stack(grids).to(torch.float32).to(image.device)
    valid = torch.ones_like(image) if weight is None else weight.to(image)
    stacked = torch.stack([image.to(torch.float32), valid.to(torch.float32)])[None].expand(len(warps), 2, rows, cols)
    warped = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gradient_x, gradient_y = image_gradients(warped[:, 0])
    masks = (-F.max_pool2d(-warped[:, 1:2], 3, stride=1, padding=1))[:, 0] > 0.99  # away from every edge of the valid region
    return torch.stack([gradient_x, gradient_y], dim=1), masks


def _matched_pose(
    pose: torch.Tensor, search: CArmGeometry, offset_px: tuple[float, float], angle_deg: float, scale: float, depth_mm: float
) -> torch.Tensor:
    """``camera_from_world`` whose image is the DRR of ``pose`` around ``offset_px`` (pixels from the
    search detector's principal point), turned by ``-angle_deg`` and shrunk by ``scale``.

    The camera turns about the source so the ray through the match becomes the principal
    ray, turns about that ray, then the CT moves ``(scale - 1) * depth_mm`` deeper.
    """
    du, dv = search.pixel_spacing_mm
    ray = torch.tensor([offset_px[0] * du, offset_px[1] * dv, search.sdd_mm], dtype=torch.float64)
    ray = ray / ray.norm()
    axis = torch.linalg.cross(ray, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    sine, cosine = float(axis.norm()), float(ray[2])
    to_centre = torch.eye(3, dtype=torch.float64)
    if sine > 1e-12:  # Rodrigues about the unit axis
        cross = _skew(axis / sine)
        to_centre = to_centre + sine * cross + (1 - cosine) * cross @ cross
    turn = math.radians(-angle_deg)
    in_plane = torch.tensor([[math.cos(turn), -math.sin(turn), 0.0], [math.sin(turn), math.cos(turn), 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    deeper = torch.tensor([0.0, 0.0, (scale - 1.0) * depth_mm], dtype=torch.float64)
    return rigid(torch.eye(3, dtype=torch.float64), deeper) @ rigid(in_plane @ to_centre, torch.zeros(3, dtype=torch.float64)) @ pose.to(torch.float64)

