"""Straight field edges: collimator blades, found by two tests whose masks are combined.

* :func:`hough_blade_edges`: the strongest gradients vote for lines; clear steps onto a bright
  plateau are blades.
* :func:`step_blade_edges`: every line's mean step across it; long, sharp steps up with no
  sharp step back down beyond them are blades, even where scatter has dimmed the plateau
  below the anatomy's brightest part and the strongest gradients belong to something else.

Both take a bone-bright image and the pixels already known to lie outside the field, and
return the far side of the blades they find (bool, the image's shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .filters import dilate, gaussian_blur, sample_across_lines
from .similarity import image_gradients

__all__ = ["hough_blade_edges", "step_blade_edges"]

_CENTRAL_RADIUS = 0.3  # central disc (fraction of the smaller image side) that sets the anatomy's range
_BLADE_STEP = 0.25  # a blade's edge steps up by at least this share of the central anatomy's 5-95 % range
_BLADE_SHARPNESS = 0.5  # ... and by at least this share of that step within a pixel of the edge
_STEADY_SHARE = 0.6  # share of a blade edge's length that steps up by at least half its mean step (0.5-0.6 alike on 60 realistic X-rays; 0.75 lost fading blades)
_PLATEAU_SHARE = 0.6  # share of the usable pixels beyond a blade's edge that stay above the anatomy just inside


@dataclass(frozen=True)
class _Frame:
    """What both blade tests measure against: the image smoothed (sigma 1.5 px), the usable pixels
    (2 px away from those known to lie outside), pixel coordinates from the image centre, and the
    5-95 % range of the smoothed anatomy in the central disc."""

    smooth: torch.Tensor
    usable: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    anatomy_range: float

    @classmethod
    def of(cls, values: torch.Tensor, known: torch.Tensor) -> "_Frame | None":
        """None when fewer than 100 pixels are usable or 20 of them lie in the central disc."""
        rows, cols = values.shape
        usable = ~dilate(known, 2)
        if int(usable.sum()) < 100:
            return None
        smooth = gaussian_blur(values, 1.5)
        row, col = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32), indexing="ij")
        x, y = col - (cols - 1) / 2, row - (rows - 1) / 2
        central = (x.square() + y.square()).sqrt() <= _CENTRAL_RADIUS * min(rows, cols)
        anatomy = smooth[central & usable]
        if anatomy.numel() < 20:
            return None
        low, high = (float(v) for v in torch.quantile(anatomy, torch.tensor([0.05, 0.95])))
        return cls(smooth, usable, x, y, high - low)


def hough_blade_edges(values: torch.Tensor, known: torch.Tensor, max_lines: int = 8) -> torch.Tensor:
    """The far side of straight field edges found by the strongest gradients' votes.

    Edge pixels (the strongest 3 % of gradients) whose brighter side faces away from the
    image centre vote for lines (normal angle in 2 degree bins, distance from the centre in
    pixels). A line with support along at least 30 % of the image side is a blade when the
    band just beyond it is brighter than the band just inside by a quarter of the central
    anatomy's 5-95 % range, and 80 % of the usable pixels beyond it stay that bright: a
    plateau out to the border (a K-wire or a bone edge returns to darker anatomy).
    """
    frame = _Frame.of(values, known)
    if frame is None:
        return torch.zeros_like(known)
    rows, cols = values.shape
    smooth, usable, x, y = frame.smooth, frame.usable, frame.x, frame.y
    gradient_col, gradient_row = (gradient[0] for gradient in image_gradients(smooth[None]))
    magnitude = torch.sqrt(gradient_col.square() + gradient_row.square())
    threshold = float(torch.quantile(magnitude[usable][:: max(1, int(usable.sum()) // 100000)], 0.97))
    outward = (gradient_col * x + gradient_row * y) > 0
    edge = usable & outward & (magnitude > threshold)
    if int(edge.sum()) < 10:
        return torch.zeros_like(known)
    angle = torch.atan2(gradient_row[edge], gradient_col[edge]) % (2 * math.pi)
    bins = 180
    angle_bin = (angle / (2 * math.pi / bins)).long() % bins
    rho = (x[edge] * torch.cos(angle) + y[edge] * torch.sin(angle)).round().long()
    reach = int(math.ceil(math.hypot(rows, cols) / 2)) + 1
    votes = torch.zeros(bins, reach + 1)
    inside = (rho >= 0) & (rho <= reach)
    votes.index_put_((angle_bin[inside], rho[inside]), torch.ones(int(inside.sum())), accumulate=True)
    step = 0.25 * frame.anatomy_range
    result = torch.zeros_like(known)
    support = 0.3 * min(rows, cols)
    smoothed_votes = votes + votes.roll(1, 0) + votes.roll(-1, 0)  # an edge's angle wobbles by a bin
    for _ in range(max_lines):
        best = int(smoothed_votes.argmax())
        angle_index, distance = divmod(best, reach + 1)
        if float(smoothed_votes[angle_index, distance]) < support:
            break
        smoothed_votes[[(angle_index + k) % bins for k in range(-3, 4)], max(0, distance - 4) : distance + 5] = 0
        phi = (angle_index + 0.5) * (2 * math.pi / bins)
        signed = x * math.cos(phi) + y * math.sin(phi) - distance
        beyond, near_in, near_out = signed > 1.5, (signed < -2) & (signed > -9), (signed > 2) & (signed < 9)
        if not bool((near_in & usable).any()) or not bool((near_out & usable).any()):
            continue
        inner = float(smooth[near_in & usable].median())
        if float(smooth[near_out & usable].median()) - inner < step:
            continue
        far = beyond & usable
        if int(far.sum()) == 0 or float((smooth[far] > inner + 0.5 * step).float().mean()) < 0.8:
            continue
        result |= signed > -1.0
    return result


def step_blade_edges(values: torch.Tensor, known: torch.Tensor, max_lines: int = 8) -> torch.Tensor:
    """The far side of straight field edges: collimator blades whose plateau scatter has dimmed.

    Every straight line (outward normal in 2 degree bins, distance from the image centre in
    pixels) gets the mean step across it, brighter side away from the centre, over the part of
    it that lies in the usable image (:func:`_line_steps`): a blade's edge steps up all along
    its length, anatomy's edges are short or curved and average out. Candidates, largest step
    first, cover at least 30 % of the image side, are sharp (``_BLADE_SHARPNESS`` of the step
    within a pixel), steady (``_STEADY_SHARE`` of their length steps up by half the mean) and
    step up by ``_BLADE_STEP`` of the central anatomy's 5-95 % range. One is a blade when no
    parallel line further out steps sharply back down (a retractor plate does) and
    ``_PLATEAU_SHARE`` of the usable pixels beyond stay above the anatomy just inside.
    """
    frame = _Frame.of(values, known)
    if frame is None:
        return torch.zeros_like(known)
    rows, cols = values.shape
    smooth, usable, x, y = frame.smooth, frame.usable, frame.x, frame.y
    step = _BLADE_STEP * frame.anatomy_range
    support = 0.3 * min(rows, cols)
    bins = 180
    (mean_step, length, steady), (sharp_step, _, _) = _line_steps(values, usable, bins, offsets=(5, 1))
    # a blade's edge is sharp (detector blur, about a pixel): most of the step is there within a pixel
    # of the line; anatomy's long edges (a spine's side) rise over several pixels
    sharp = sharp_step >= _BLADE_SHARPNESS * mean_step
    score = torch.where((length >= support) & sharp & (steady >= _STEADY_SHARE), mean_step, torch.full_like(mean_step, -math.inf))
    result = torch.zeros_like(known)
    for _ in range(max_lines):
        best = int(score.argmax())
        angle_index, distance = divmod(best, score.shape[1])
        if float(score[angle_index, distance]) < 0.05 * frame.anatomy_range:
            break
        score[[(angle_index + k) % bins for k in range(-3, 4)], max(0, distance - 4) : distance + 5] = -math.inf
        # a retractor plate steps sharply back down further out, parallel to it; a blade does not (the
        # anatomy beyond may thin out, but smoothly)
        later, later_length = sharp_step[angle_index, distance + 4:], length[angle_index, distance + 4:]
        if bool(((later < -0.5 * sharp_step[angle_index, distance]) & (later_length >= 0.5 * length[angle_index, distance])).any()):
            continue
        line_step = float(mean_step[angle_index, distance])
        if line_step < step:
            continue
        phi = (angle_index + 0.5) * (2 * math.pi / bins)
        signed = x * math.cos(phi) + y * math.sin(phi) - distance
        near_in, far = (signed < -2) & (signed > -9) & usable, (signed > 1.5) & usable
        if not bool(near_in.any()) or not bool(far.any()):
            continue
        inner = float(smooth[near_in].median())
        if float((smooth[far] > inner + 0.5 * step).float().mean()) < _PLATEAU_SHARE:
            continue
        result |= signed > -1.0
    return result


def _line_steps(image: torch.Tensor, usable: torch.Tensor, bins: int, offsets: tuple[int, ...] = (3,), chunk: int | None = None,
                segment: int = 16) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """For each offset in ``offsets``, ``(mean step, length, steady)``, each ``(bins, reach + 1)``, of every line
    ``x cos(phi) + y sin(phi) = d`` (``phi`` the outward normal at bin centres, ``d`` in pixels from the image
    centre): the mean of ``image`` ``offset`` pixels beyond the line minus ``offset`` pixels inside it, over
    the samples along the line (one per pixel) where both are usable; ``length`` counts those samples;
    ``steady`` is the share of the line's ``segment``-pixel pieces (with a quarter of their samples
    usable) whose own mean step is at least half the line's: near 1 for an edge that steps up all
    along, low for a line that crosses an edge obliquely. The image is sampled once, across the lines
    out to the largest offset, and every offset reads the same samples, ``chunk`` angles at a time (by default
    :func:`_angles_per_chunk`; the results do not depend on it)."""
    chunk = chunk or _angles_per_chunk()
    rows, cols = image.shape
    reach = int(math.ceil(math.hypot(rows, cols) / 2)) + 1
    pieces = -(-(2 * reach + 1) // segment)
    widest = max(offsets)
    along = torch.arange(pieces * segment, dtype=torch.float32) - reach
    normal = torch.arange(-widest, reach + widest + 1, dtype=torch.float32)
    results: list[tuple[list, list, list]] = [([], [], []) for _ in offsets]
    for first in range(0, bins, chunk):
        phi = (torch.arange(first, min(first + chunk, bins), dtype=torch.float32) + 0.5) * (2 * math.pi / bins)
        intensity, valid = sample_across_lines(image, usable, phi, along, normal)
        for offset, (means, lengths, steadies) in zip(offsets, results):
            beyond, inside = slice(widest + offset, widest + offset + reach + 1), slice(widest - offset, widest - offset + reach + 1)
            both = valid[..., beyond] & valid[..., inside]
            difference = (intensity[..., beyond] - intensity[..., inside]) * both
            count = both.sum(dim=1).to(torch.float32)
            mean = difference.sum(dim=1) / count.clamp(min=1)
            piece_sum = difference.unflatten(1, (pieces, segment)).sum(dim=2)  # (B, pieces, d)
            piece_count = both.unflatten(1, (pieces, segment)).sum(dim=2).to(torch.float32)
            counted = piece_count >= segment / 4
            rising = counted & (piece_sum >= 0.5 * mean[:, None] * piece_count)
            means.append(mean)
            lengths.append(count)
            steadies.append(rising.sum(dim=1) / counted.sum(dim=1).clamp(min=1))
    return [(torch.cat(means), torch.cat(lengths), torch.cat(steadies)) for means, lengths, steadies in results]


def _angles_per_chunk() -> int:
    """Angles :func:`_line_steps` samples at once: with one thread 2 (a chunk's samples, about 70,000 per angle on a
    256-pixel image, then stay in the core's cache: 28 % faster than 12 on nine realistic X-rays, the same results to
    the bit), with more 12 (each call wakes the other threads under ``sopi``'s short OpenMP waits, and 2 was a third
    slower than 12 with two threads)."""
    return 2 if torch.get_num_threads() == 1 else 12
