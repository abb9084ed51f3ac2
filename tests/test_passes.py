"""The passes of one registration (sopi.registration.passes.run_passes) around a start kept tentatively: fake passes
with fixed confidences stand for real ones."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sopi.registration.confidence import LIKELY_FAILED_BELOW
from sopi.registration.methods import START_NOTE, WIDER_NOTE, GlobalStage, get_method
from sopi.registration.passes import REFINED_NOTE, SEARCHED_NOTE, _Pass, run_passes


def _pass(confidence: float, label: str, tentative: bool) -> _Pass:
    cues = {"confidence": confidence, "likely_failed": confidence < LIKELY_FAILED_BELOW, "spine_in_view": None}
    assessment = type("Assessment", (), cues)()
    record = {"stage": label, **({"tentative": True} if tentative else {})}
    return _Pass(None, torch.full((6,), confidence, dtype=torch.float64), [record], 3, True, confidence, assessment, {"pass": label})


@pytest.mark.parametrize("confidences, notes, winner", [
    ((0.9,), [""], 0.9),  # trusted: nothing else runs
    ((0.3, 0.8), ["", SEARCHED_NOTE], 0.8),  # flagged: searched after all, which wins
    # flagged, searched flagged too: the wider search, then the start; the tentative pass (0.45) is more confident
    # than the searched ones but flagged, so it cannot win, as a flagged pass from the start cannot
    ((0.45, 0.3, 0.1, 0.2), ["", SEARCHED_NOTE, WIDER_NOTE, START_NOTE], 0.3),
])
def test_a_flagged_tentative_start_is_searched_after_all_and_wins_only_where_trusted(confidences, notes, winner):
    stages = tuple(GlobalStage(tentative_start_above=0.05) if isinstance(stage, GlobalStage) else stage
                   for stage in get_method("global+opt"))
    calls = []

    def run(chosen, note, start=None):
        calls.append((chosen, note))
        return _pass(confidences[len(calls) - 1], note or "first", tentative=len(calls) == 1)

    final = run_passes(run, stages)
    assert [note for _, note in calls] == notes
    assert float(final.theta[0]) == winner
    assert [record["stage"] for record in final.records] == [note or "first" for note in notes]  # every pass recorded
    if len(calls) > 1:
        searched = calls[1][0]
        assert searched[0].tentative_start_above is None and searched[1:] == stages[1:]  # the same stages, the search forced
        assert searched[0] == replace(GlobalStage(), tentative_start_above=None)  # nothing else changed


def test_a_pass_that_searched_is_never_run_again():
    """Only a tentative start's record asks for the search after all: a flagged searched first pass goes on to the
    wider search as before."""
    stages = get_method("global+opt")
    calls = []

    def run(chosen, note, start=None):
        calls.append(note)
        return _pass((0.3, 0.8)[len(calls) - 1], note or "first", tentative=False)

    assert float(run_passes(run, stages).theta[0]) == 0.8 and calls == ["", WIDER_NOTE]


@pytest.mark.parametrize("confidences, notes, looks, winner", [
    # the tentative result refined with the instruments masked is trusted: no search at all
    ((0.3, 0.8), ["", REFINED_NOTE], [True], 0.8),
    # flagged too: the mask comes off, the search runs after all, then the searched result's own second look
    ((0.3, 0.4, 0.2, 0.9), ["", REFINED_NOTE, SEARCHED_NOTE, REFINED_NOTE], [True, False, True], 0.9),
])
def test_a_flagged_tentative_start_with_instruments_is_refined_masked_before_anything_is_searched(confidences, notes, looks, winner):
    stages = tuple(GlobalStage(tentative_start_above=0.05) if isinstance(stage, GlobalStage) else stage
                   for stage in get_method("global+opt"))
    calls, asked = [], []

    def run(chosen, note, start=None):
        calls.append((note, start))
        return _pass(confidences[len(calls) - 1], note or "first", tentative=len(calls) == 1)

    def second_look(mask: bool = True) -> bool:
        asked.append(mask)
        return True

    final = run_passes(run, stages, second_look)
    assert [note for note, _ in calls] == notes and asked == looks
    assert float(final.theta[0]) == winner
    assert calls[1][1] is not None and float(calls[1][1][0]) == confidences[0]  # refined from the tentative result
    if len(calls) > 3:
        assert float(calls[3][1][0]) == confidences[2]  # the second look refines the searched result


def test_without_instruments_found_a_flagged_tentative_start_is_searched_at_once():
    stages = tuple(GlobalStage(tentative_start_above=0.05) if isinstance(stage, GlobalStage) else stage
                   for stage in get_method("global+opt"))
    calls, asked = [], []

    def run(chosen, note, start=None):
        calls.append(note)
        return _pass((0.3, 0.8)[len(calls) - 1], note or "first", tentative=len(calls) == 1)

    final = run_passes(run, stages, lambda mask=True: asked.append(mask) or False)
    assert calls == ["", SEARCHED_NOTE] and asked == [True] and float(final.theta[0]) == 0.8
