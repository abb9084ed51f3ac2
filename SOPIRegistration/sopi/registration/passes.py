"""The passes of one registration: a method's stages run once (:func:`stage_loop`), and again in other ways when the
result is flagged likely failed (:func:`run_passes`): a second look with instruments masked, a wider search, the
start refined without a search, the searches' other hypotheses refined all the way."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from ..geometry import params_to_dict
from .global_search import same_hypothesis
from .methods import START_NOTE, WIDER_NOTE, polish_stages, searched_anyway, widened, without_search
from .optimizers import Monitor

__all__ = ["ALTERNATIVES", "ALTERNATIVE_NOTE", "INSTRUMENTS_NOTE", "NOTHING_EXPLAINED_BELOW", "READING_NOTE", "REFINED_NOTE", "REJUDGED_NOTE", "SEARCHED_NOTE",
           "WIDER_PASS_MARGIN", "judged_pass", "run_passes", "stage_loop"]


@dataclass
class _Pass:
    """One run of a method's stages: the problem it ran on, where it ended, its records, assessment
    and what it found about the X-ray(s) (the result's ``xray_preparation``)."""

    problem: object
    theta: torch.Tensor
    records: list[dict]
    iterations: int
    converged: bool
    similarity: float
    assessment: object
    preparation: object
    # the other refined hypotheses of the pass's global search (thetas, most similar first), for run_passes
    alternatives: list = field(default_factory=list)


def stage_loop(
    problem, stages: tuple, note: str, step: Callable, assess: Callable, preparation: object,
    progress: Callable[[float, str], None] | None, cancel: Callable[[], bool] | None, renders_per_pose: int = 1,
    start: torch.Tensor | None = None,
) -> _Pass:
    """Run ``stages`` in turn from ``start`` on ``problem`` (one view's or several views'), each
    stage's label prefixed with ``note``; ``step(index, stage, theta, monitor)`` runs one stage and
    returns ``(outcome, extra record fields)``. Each candidate pose renders ``renders_per_pose`` DRRs.
    ``assess(problem, theta)`` judges where the last stage ended; its confidence and flag go into the last stage's
    record (``pass_confidence``, ``pass_likely_failed``). ``start``: the first stage's theta (default 0, the problem's
    initial pose)."""
    theta = torch.zeros(6, dtype=torch.float64) if start is None else start.reshape(6).to(torch.float64)
    records, iterations, converged, similarity = [], 0, True, float("nan")
    for index, stage in enumerate(stages):
        monitor = Monitor(progress, cancel, index / len(stages), (index + 1) / len(stages), note + stage.label)
        stage_started = time.perf_counter()
        outcome, extra = step(index, stage, theta, monitor)
        theta, iterations, converged = outcome.theta, iterations + outcome.iterations, outcome.converged
        similarity = -outcome.loss
        records.append({
            "stage": note + stage.label, "iterations": outcome.iterations, "similarity": similarity,
            "time_s": round(time.perf_counter() - stage_started, 3), "params": params_to_dict(theta),
            "renders": outcome.evaluations * renders_per_pose, **extra,  # a global search counts its search renders in extra
        })
    assessment = assess(problem, theta)
    if records:  # each pass's own judgement, kept in its last stage's record (a later pass may win or lose against it)
        records[-1].update(_judgement_fields(assessment))
    return _Pass(problem, theta, records, iterations, converged, similarity, assessment, preparation)


def judged_pass(problem, theta: torch.Tensor, note: str, assess: Callable, preparation: object) -> _Pass:
    """A pass that runs no stage: ``theta`` judged on ``problem`` (``assess(problem, theta)``), with one record saying so
    (``note + "judged"``, its confidence and flag as a pass's last record holds them)."""
    started = time.perf_counter()
    theta = theta.reshape(6).to(torch.float64)
    assessment = assess(problem, theta)
    record = {"stage": note + "judged", "iterations": 0, "similarity": float(assessment.similarity), "time_s": round(time.perf_counter() - started, 3),
              "params": params_to_dict(theta), **_judgement_fields(assessment)}
    return _Pass(problem, theta, [record], 0, True, float(assessment.similarity), assessment, preparation)


def _judgement_fields(assessment) -> dict:
    """A pass's own judgement as its last record holds it (``pass_confidence``, ``pass_likely_failed``)."""
    return {"pass_confidence": round(float(assessment.confidence), 4), "pass_likely_failed": bool(assessment.likely_failed)}


#: The wider pass replaces the first only when more confident by this much: it searched rolls beyond
#: the first search's, which are less likely, so a near tie stays with the first (on 48 realistic
#: cases that ran it, this changed 3: one failure fixed, two failures ending elsewhere; docs/benchmarks.md).
WIDER_PASS_MARGIN = 0.05


#: Prefix of the stage labels of the pass that looks again with straight instruments masked.
INSTRUMENTS_NOTE = "instruments masked: "

#: Prefix of the stage labels of the pass that searches after all when a start kept tentatively
#: (``GlobalStage.tentative_start_above``) ended flagged likely failed.
SEARCHED_NOTE = "the start doubted, searched: "

#: Prefix of the stage labels of the pass that first refines the first result with straight instruments masked.
REFINED_NOTE = "instruments masked, the first result refined: "

#: Prefix of the record of the first result judged again with straight instruments masked (:data:`REJUDGE_FIRST_MASKED`).
REJUDGED_NOTE = "instruments masked, the first result judged: "

#: Prefix of the stage labels of the pass that registers the X-ray read with the other polarity its edges left open.
READING_NOTE = "the other polarity: "

#: The readings the polarity judgement left closed are tried too when no reading tried so far registers the X-ray
#: with a confidence of at least this: the image's cues (coarse pattern, edges) chose a reading under which the
#: registration explains nothing. The edges are matched over every placement and turn a wide start allows, and a
#: reversed image can match somewhere as well as the right reading matches in place: DiffDRR's display images of the
#: chest CT, read bone-bright, matched best 110-160 mm to the side and turned 15-30 deg, within 0.033 below to 0.008
#: above the right readings (which matched in place on two of the three), so they were read bone-bright; their first
#: passes scored 0.004-0.023, and read the other ways they registered to 0.4-1.4 mm (docs/benchmarks.md, "Readings
#: the cues left closed").
NOTHING_EXPLAINED_BELOW = 0.05

#: A result registered on a reading against the image's cues is flagged (its confidence capped just below
#: ``LIKELY_FAILED_BELOW`` by this much): the confidence cannot arbitrate between readings on its own, since a reversed
#: image can line up with a wrong pose's edges (a cropped CT's box), so the overlay is for the user to check.
AGAINST_THE_CUES_MARGIN = 0.01

#: Prefix of the stage labels of the passes that refine the search's other hypotheses all the way.
ALTERNATIVE_NOTE = "another hypothesis: "

#: Whether the second look first refines the first result with the instruments masked (no search) and searches
#: again only when that is flagged too (docs/benchmarks.md, 2026-12-06).
REFINE_FIRST_MASKED = True

#: Whether the second look, after a first pass that searched, first judges the first result again with the instruments
#: masked (on a problem adapted to the X-ray at it, as a pass's stages after the first are) and, trusted so, only polishes
#: it with them masked (:data:`REJUDGED_POLISH`) instead of refining it with opt's wide CMA-ES again. A searched pass ran
#: that CMA-ES already; a kept start ran only a short one, so its refinement is left as it was: on the paper starts of
#: two seeds (four CTs) the masked refinement after a kept start ended closer than the first pose in six of eight cases
#: (0.1-0.9 mm; one 3.2 mm miss without it). After a search, on the seven held-out wide cases (seed 2, four CTs) that
#: ended trusted after the masked refinement, the first result judged again was trusted too, and polished it ended within
#: the paper's 3 deg / 3 mm in all seven, as after the refinement (kept unpolished: six), 1.6-6.8 s sooner
#: (docs/benchmarks.md, thirty-first session).
REJUDGE_FIRST_MASKED = True

#: Whether a first result trusted once judged again with the instruments masked is still polished with them masked
#: (:func:`~sopi.registration.methods.polish_stages`: the stages after opt's wide CMA-ES), the more confident of the two
#: kept. Without it a wide case of the sample CT ended 3.97 mm off (4.6 mm across: a miss) where the polish ended 0.79 mm
#: off (docs/benchmarks.md, thirty-first session).
REJUDGED_POLISH = True

#: Whether that refinement of the first result starts as a kept start does (``Stage.after_kept_start``: a depth scan and
#: a short CMA-ES instead of ``opt``'s wide CMA-ES). Off: on 60 realistic cases of three CTs (paper and wide starts) the
#: 13 that ran it rendered about 420 DRRs fewer each, but where the first result was a few mm off the wide CMA-ES
#: brought it closer (a wide pelvis case 7.6 mm: 0.29 mm against 2.24), and over the 7 whose pose moved the mean
#: mTRE was 1.09 mm with it against 1.38 (docs/benchmarks.md, "The first result refined as a kept start").
REFINE_AS_KEPT_START = False

#: How many of each searched pass's other hypotheses (most similar first) a flagged result refines all the way, one
#: round at a time while the winner stays flagged. On 54 flagged realistic cases (wide and paper starts, five CTs) the
#: best of each pass fixed the same failures as the best three (docs/benchmarks.md, "Every hypothesis refined before a
#: flagged result is given"). On 23 flagged cases of the held-out chest and pelvis CTs (far, wide and paper starts), the
#: second round fixed a chest wide start (28.8 -> 1.95 mm) for 3-33 s more per flagged case on one thread, rounds three
#: to five one more far start (to 8.5 mm) for 16-105 s more (docs/benchmarks.md, 2026-12-06, sixteenth session).
ALTERNATIVES = 2


def run_passes(
    run: Callable[..., _Pass], stages: tuple, second_look: Callable[..., bool] | None = None,
    judge: Callable[[object, torch.Tensor], object] | None = None, other_readings: Callable[[int, bool], bool] | None = None,
) -> _Pass:
    """``run(stages, note, start=None, kept_start=False, judge_only=False)`` (``start``: the first stage's theta; ``kept_start``: the first
    stage runs its ``after_kept_start`` stages instead, as after a global search that kept its start; ``judge_only``: no
    stage runs, ``start`` is judged on the pass's problem adapted to the X-ray there, :func:`judged_pass`) for ``run(stages, "")``. While the last
    such first pass is flagged likely failed and ``other_readings(k, unexplained)`` reads the X-ray with the ``k``-th
    other polarity its edges left open (k = 1, 2, ...; it returns False where there is none), or, where
    ``unexplained`` (no first pass so far reached :data:`NOTHING_EXPLAINED_BELOW`), one they left closed,
    ``run(stages, READING_NOTE)`` too: the most confident of these first passes (:func:`_winner`) stays, with its
    reading (``other_readings(i)`` goes back to the ``i``-th; 0 is the first), and the result's preparation record gets
    ``polarity_first_passes`` (each reading's first confidence); a reading the cues left closed (its record's
    ``polarity_against_the_cues``) competes only where its first pass reached :data:`NOTHING_EXPLAINED_BELOW` itself,
    and a result on it is flagged. Then, when the result is flagged likely failed:

    0. when its global search kept the start only tentatively (``GlobalStage.tentative_start_above``): where
       ``second_look()`` masks straight instruments (with :data:`REFINE_FIRST_MASKED`), the tentative result is first
       refined with them masked, and that is the result when it is trusted; otherwise ``second_look(False)`` takes
       the mask off again and the stages run again with the search (``run(searched_anyway(stages), SEARCHED_NOTE)``),
       the first pass from then on. The tentative pass competes only where trusted, like a pass from the start;
    1. when ``second_look()`` masks straight instruments in the X-ray (it returns True; every later pass
       runs with them masked), ``run(stages, INSTRUMENTS_NOTE)``: a retractor blade's or a wire's straight
       edges explain an X-ray better at a wrong pose than its anatomy, but masking them for every X-ray
       cost more wide starts than it saved (docs/benchmarks.md, "Straight instruments"); as a second look
       at flagged results only, it lost none. With ``judge`` (``judge(problem, theta)``, an assessment), the
       first pass's pose is judged again on that pass's problem, so that every pass competes under the same
       weights: a smaller weight scores higher, and a right first pose flagged because of the instruments
       lost to a worse masked one (docs/benchmarks.md, 2026-12-05). With :data:`REJUDGE_FIRST_MASKED`, a first
       result whose pass searched is judged again with them masked first (``run(without the search, REJUDGED_NOTE,
       start=theta, judge_only=True)``: no stage runs) and, trusted so, is only polished with them masked
       (``run(polish_stages(without the search), REFINED_NOTE, start=theta)`` with :data:`REJUDGED_POLISH`; the more
       confident of the two stays). Otherwise, with :data:`REFINE_FIRST_MASKED`, it is refined with them masked
       (``run(without the search, REFINED_NOTE, start=theta)``, as from a kept start with
       :data:`REFINE_AS_KEPT_START`); the masked search runs only when that is flagged too;
    2. when every pass so far is flagged and the method has a global search to widen
       (:func:`~sopi.registration.methods.widened`), ``run(wider, WIDER_NOTE)`` from the same start;
    3. when that is flagged too, ``run(without the search, START_NOTE)``
       (:func:`~sopi.registration.methods.without_search`);
    4. when the pass that would win is flagged too, the searched passes' other refined hypotheses
       (``_Pass.alternatives``, distinct), each refined all the way: ``run(without the search, ALTERNATIVE_NOTE,
       start=theta)``, the best of each pass first, then the next best of each while the winner is still flagged, up
       to :data:`ALTERNATIVES` of each (:func:`_alternatives`). The search ranks its hypotheses after a short
       refinement at 64 pixels, which sees neither depth nor the spine's detail; the full refinement's confidence
       does, and a flagged result means that ranking already failed once (docs/benchmarks.md, "Every hypothesis
       refined before a flagged result is given").

    The more confident searched pass wins (the wider one by at least :data:`WIDER_PASS_MARGIN`), or a pass from the
    start or from another hypothesis where it is not flagged and more confident still (a flagged one replaced near
    misses and successes of the searched passes as often as it recovered a failure); the records and iterations
    include every pass's."""
    final = run(stages, "")
    tried = [final]  # the first pass of each reading, in the order they ran

    def unexplained() -> bool:
        return max(one.assessment.confidence for one in tried) < NOTHING_EXPLAINED_BELOW

    while tried[-1].assessment.likely_failed and other_readings is not None and other_readings(len(tried), unexplained()):
        tried.append(run(stages, READING_NOTE))
    if len(tried) == 1:
        return _further_passes(run, stages, final, second_look, judge)
    # a reading against the image's cues competes only where it explains the image itself
    final = _winner([("first", one) for one in tried if not _against_the_cues(one) or one.assessment.confidence >= NOTHING_EXPLAINED_BELOW])
    if final is not tried[-1]:
        other_readings(next(index for index, one in enumerate(tried) if one is final), unexplained=True)  # back to the winner's reading, tried
    first_records = [record for one in tried for record in one.records]  # before a merge replaces the winner's
    kept = len(final.records)
    result = _further_passes(run, stages, final, second_look, judge)
    result.records = first_records + result.records[kept:]  # every reading's first pass, then the passes after the winner's
    result.iterations += sum(one.iterations for one in tried if one is not final)
    if isinstance(result.preparation, dict):  # a later pass's record too
        result.preparation["polarity_first_passes"] = {_reading_of(one): round(one.assessment.confidence, 4) for one in tried}
        if _against_the_cues(result):
            result.assessment = _flagged(result.assessment)
    return result


def _against_the_cues(one: _Pass) -> bool:
    """Whether a pass read its X-ray as the image's cues did not choose (its preparation record says so)."""
    return isinstance(one.preparation, dict) and bool(one.preparation.get("polarity_against_the_cues", False))


def _flagged(assessment):
    """``assessment`` with its confidence capped below ``LIKELY_FAILED_BELOW`` (:data:`AGAINST_THE_CUES_MARGIN`)."""
    from .confidence import LIKELY_FAILED_BELOW

    return replace(assessment, confidence=min(assessment.confidence, LIKELY_FAILED_BELOW - AGAINST_THE_CUES_MARGIN), likely_failed=True)


def _reading_of(one: _Pass) -> str:
    """The polarity a pass read its X-ray with (its preparation record's), "?" where it does not say."""
    return one.preparation.get("polarity", "?") if isinstance(one.preparation, dict) else "?"


def _further_passes(run: Callable[..., _Pass], stages: tuple, final: _Pass, second_look, judge) -> _Pass:
    """:func:`run_passes`'s steps 0-4 after the first pass ``final``."""
    passes = [("first", final)]
    local = without_search(stages)
    if final.assessment.likely_failed and _kept_tentatively(final):
        passes = [("tentative", final)]  # like a pass from the start: it wins only where trusted
        if REFINE_FIRST_MASKED and local is not None and second_look is not None and second_look():
            passes.append(("refined", run(local, REFINED_NOTE, final.theta, kept_start=REFINE_AS_KEPT_START)))
            if not passes[-1][1].assessment.likely_failed:
                return _merged(passes)
            second_look(False)  # the search after all sees the X-ray as the first pass would have
        final = run(searched_anyway(stages), SEARCHED_NOTE)
        passes.append(("first", final))
    if final.assessment.likely_failed and second_look is not None and second_look():
        at = next(index for index, (kind, _) in enumerate(passes) if kind == "first")  # where the first pass stands
        if REJUDGE_FIRST_MASKED and judge is not None and local is not None and _searched(final):
            rejudged = run(local, REJUDGED_NOTE, final.theta, judge_only=True)
            trusted = not rejudged.assessment.likely_failed  # the instruments alone made it doubtful: no refinement, no search
            final = replace(final, records=final.records + rejudged.records,
                            **({"assessment": rejudged.assessment, "preparation": rejudged.preparation} if trusted else {}))
            passes[at] = ("first", final)
            if trusted:
                tail = polish_stages(local) if REJUDGED_POLISH else None
                if tail:  # still polished with them masked, the wide CMA-ES left out; the more confident stays
                    passes.append(("refined", run(tail, REFINED_NOTE, final.theta)))
                return _merged(passes) if len(passes) > 1 else final
        refined = run(local, REFINED_NOTE, final.theta, kept_start=REFINE_AS_KEPT_START) if REFINE_FIRST_MASKED and local is not None else None
        masked = refined if refined is not None and not refined.assessment.likely_failed else run(searched_anyway(stages), INSTRUMENTS_NOTE)
        if judge is not None:  # the first pose judged as the masked one is; what was masked is what it was judged without
            passes[at] = ("first", replace(final, assessment=judge(masked.problem, final.theta), preparation=masked.preparation))
        if refined is not None:
            passes.append(("refined", refined))
        if masked is not refined:
            passes.append(("instruments", masked))
    wider = widened(stages, searched=all(record.get("searched", True) for record in final.records))
    if all(one.assessment.likely_failed for _, one in passes) and wider is not None:
        passes.append(("wider", run(wider, WIDER_NOTE)))
        if passes[-1][1].assessment.likely_failed and local is not None:
            passes.append(("start", run(local, START_NOTE)))
    if local is not None:
        _alternatives(passes, lambda theta: run(local, ALTERNATIVE_NOTE, theta))
    return _merged(passes) if len(passes) > 1 else final


def _alternatives(passes: list[tuple[str, _Pass]], refine: Callable[[torch.Tensor], _Pass]) -> None:
    """While the winner is flagged: in rounds, each searched pass's next other hypothesis (``_Pass.alternatives``,
    distinct ones only) refined all the way and added to ``passes``, at most :data:`ALTERNATIVES` rounds. A round
    starts only when the ones before left the winner flagged, so the first round is all that runs where it ends
    trusted."""
    earlier = [one for _, one in passes]  # only a searched pass has other hypotheses
    tried: list[torch.Tensor] = []
    for depth in range(ALTERNATIVES):
        if not _winner(passes).assessment.likely_failed:
            return
        for one in earlier:
            if depth < len(one.alternatives) and not any(same_hypothesis(one.alternatives[depth], other) for other in tried):
                tried.append(one.alternatives[depth])
                passes.append(("alternative", refine(one.alternatives[depth])))


def _merged(passes: list[tuple[str, _Pass]]) -> _Pass:
    """The winning pass (:func:`_winner`) with every pass's records and iterations."""
    records = [record for _, one in passes for record in one.records]
    iterations = sum(one.iterations for _, one in passes)
    final = _winner(passes)
    final.records, final.iterations = records, iterations
    return final


def _winner(passes: list[tuple[str, _Pass]]) -> _Pass:
    """The searched passes compete on confidence, the wider one handicapped; the unsearched ones (from the start, from
    another hypothesis) only where trusted. A result that shows the spine beats one that does not (capped,
    confidence.capped_by_spine_in_view), whatever their confidences: every true pose shows it, so the latter is wrong
    for sure, the former may only be off."""
    scored = [((_spine_shown(one.assessment), one.assessment.confidence - (WIDER_PASS_MARGIN if kind == "wider" else 0.0)), one)
              for kind, one in passes if kind not in ("start", "alternative", "refined", "tentative") or not one.assessment.likely_failed]
    return max(scored, key=lambda pair: pair[0])[1]  # the first of equals


def _searched(one: _Pass) -> bool:
    """Whether a pass's global search searched (rather than keeping its start); False without a search."""
    return any(record.get("searched", False) for record in one.records)


def _kept_tentatively(one: _Pass) -> bool:
    """Whether a pass's global search kept its start only tentatively (its record says so)."""
    return any(record.get("tentative", False) for record in one.records)


def _spine_shown(assessment) -> bool:
    """Whether an assessment's result shows the spine (:func:`confidence.shows_spine` of its ratio)."""
    from .confidence import shows_spine

    return shows_spine(assessment.spine_in_view)
