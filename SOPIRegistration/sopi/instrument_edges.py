"""Straight metal instruments: K-wires, screws and retractor blades found as pairs of straight edges.

An instrument absent from the CT adds a nearly constant attenuation over a band with straight,
parallel sides. In a bone-bright image that is a step up and, a band's width further on, an equal
step down, both along the same straight line for a good length of it. Anatomy's bright bands (ribs,
vertebral bodies, processes) are curved, short, or change their contrast along their length.

The image is smoothed (sigma 1 px) and its slow thickness gradient removed (less a Gaussian of
``_HIGH_PASS`` of its side). Every straight line through it (normal angle in 3 degree bins over
half a turn, signed distance from the image centre in pixels) is read in pieces of ``_PIECE_PX``
pixels: the mean step across the line (one pixel beyond minus one pixel before it) over each piece.
A step counts where it is sharp (at least ``_SHARPNESS`` of the step three pixels either side: a
soft ridge such as a vessel or a column of vertebrae rises over several pixels), a local extreme
along the normal, and above ``_NOISE_Z`` robust standard deviations of all pieces' steps. A band
is a piece where a step up and a step down face each other at a width from ``_MIN_WIDTH_PX``
pixels to ``_MAX_WIDTH`` of the image side and agree in height within a factor of two
(``_BALANCE``). An instrument is a band that runs on over ``_MIN_PIECES`` consecutive pieces (its
sides may drift by a pixel from piece to piece). A piece counts where the band covers enough of it
to lift the mean step above the noise, so under little noise a band a little over two pieces long
can be found.

:func:`straight_instruments` takes the image binned to about 256 pixels (as
:func:`sopi.xray_prep.prepare_xray` analyses it) and the pixels already known to be unusable,
and returns the bands it finds, or only their sides (bool, the image's shape).

Measured on 270 realistic benchmark X-rays of three CTs, and on the clean DRRs of the same poses
for what it takes of the anatomy: ``benchmarks/metal_detection.py``, docs/benchmarks.md
(2026-12-04, "Straight instruments").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .filters import gaussian_blur, sample_across_lines

__all__ = ["straight_instruments"]

_ANGLES = 60  # normal angles over half a turn (3 degree bins: a line drifts by 0.4 px over a piece)
_PIECE_PX = 16  # length of the pieces a line is read in
_ALONG_PX = 2  # samples along a line this many pixels apart (the image is smoothed by a pixel's sigma)
_HIGH_PASS = 0.025  # the image less a Gaussian of this share of its larger side: a body's slow thickness gradient
_MIN_PIECES = 4  # a band runs straight over at least this many consecutive pieces
_MIN_WIDTH_PX = 2  # narrowest band (a K-wire at about 256 pixels)
_MAX_WIDTH = 0.19  # widest band, as a share of the larger image side (a 25 mm blade at 1.5x on a 300 mm detector)
_WIDE_OFFSET = 3  # a side's sharpness: its step a pixel either side against three pixels either side
_SHARPNESS = 0.45  # a blurred metal edge (sigma 1.5 px) keeps about half its step within a pixel; a soft ridge a third
_SIDE_PX = 2.0  # without interiors, a band's sides are masked this far into it
_NOISE_Z = 4.0  # a side's step exceeds this many robust standard deviations of the pieces' steps
_BALANCE = 0.5  # the smaller of a band's two steps is at least this share of the larger


def straight_instruments(values: torch.Tensor, invalid: torch.Tensor, interiors: bool = True, chunk: int = 10) -> torch.Tensor:
    """Bool ``(rows, cols)``: pixels of straight bright bands (see the module docstring).

    Args:
        values: the image, bone bright, with ``invalid`` pixels filled from their neighbours.
        invalid: bool, pixels the analysis must not read (outside the field, saturated).
        interiors: True: whole bands. False: bands wider than ``2 * _SIDE_PX`` give only their two sides,
            ``_SIDE_PX`` into the band (and a pixel and a half outside it): within a plate of constant
            thickness the anatomy still shows, offset by the metal's attenuation, and its gradients are
            the anatomy's.
        chunk: angles read at once (memory only).
    """
    rows, cols = values.shape
    usable = (~invalid).to(torch.float32)
    image = values.to(torch.float32)
    smooth = gaussian_blur(image, 1.0) - gaussian_blur(image, _HIGH_PASS * max(rows, cols))
    reach = int(math.ceil(math.hypot(rows, cols) / 2)) + 1
    pieces = -(-(2 * reach + 1) // _PIECE_PX)
    along = torch.arange(0, pieces * _PIECE_PX, _ALONG_PX, dtype=torch.float32) - reach
    normal = torch.arange(-reach - _WIDE_OFFSET, reach + _WIDE_OFFSET + 1, dtype=torch.float32)
    widths = torch.arange(_MIN_WIDTH_PX, max(_MIN_WIDTH_PX + 1, round(_MAX_WIDTH * max(rows, cols))) + 1)
    steps = []
    for first in range(0, _ANGLES, chunk):
        phi = (torch.arange(first, min(first + chunk, _ANGLES), dtype=torch.float32) + 0.5) * (math.pi / _ANGLES)
        steps.append(_piece_steps(smooth, usable, phi, along, normal))
    step, wide = torch.cat(steps, dim=1)  # (angles, pieces, distances); NaN where a piece is mostly unusable
    read = ~torch.isnan(step)
    if int(read.sum()) < 100:
        return torch.zeros_like(invalid)
    sample = step[read]
    median = float(sample.median())
    spread = 1.4826 * float((sample - median).abs().median()) + 1e-12
    threshold = _NOISE_Z * spread
    # an instrument's side is sharp: most of its step lies within a pixel of the line (a soft ridge's does not)
    filled = torch.where(read & (step.abs() >= _SHARPNESS * wide.abs()), step, torch.zeros_like(step))
    left, right = F.pad(filled, (1, 0))[..., :-1], F.pad(filled, (0, 1))[..., 1:]
    up = read & (filled > threshold) & (filled >= left) & (filled >= right)
    down = read & (filled < -threshold) & (filled <= left) & (filled <= right)
    found = []
    for first in range(0, _ANGLES, chunk):
        part = slice(first, first + chunk)
        kept = _long_bands(filled[part], up[part], down[part], widths)  # (angles, pieces, distances, widths)
        if bool(kept.any()):
            # the widest band starting at each place is enough to draw
            angle, piece, distance = kept.any(dim=-1).nonzero(as_tuple=True)
            last = kept.shape[-1] - 1 - kept[angle, piece, distance].flip(-1).to(torch.uint8).argmax(dim=-1)
            found.append((angle + first, piece, distance, widths[last]))
    if not found:
        return torch.zeros_like(invalid)
    angle, piece, distance, width = (torch.cat(column) for column in zip(*found))
    phi = (angle.to(torch.float32) + 0.5) * (math.pi / _ANGLES)
    return _draw_bands(phi, piece, distance, width, reach, rows, cols, interiors) & ~invalid


def _long_bands(step: torch.Tensor, up: torch.Tensor, down: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Bool ``(angles, pieces, distances, widths)``: a band of each width starts at each distance in each
    piece, and runs on over ``_MIN_PIECES`` consecutive pieces (drifting by a pixel between them)."""
    angles, pieces, distances = step.shape
    band = torch.zeros(angles, pieces, distances, len(widths), dtype=torch.bool)
    angle, piece, distance = up.nonzero(as_tuple=True)  # steps up are few: pair each with the steps down beyond it
    far = distance[:, None] + widths[None, :]
    inside = far < distances
    far = far.clamp(max=distances - 1)
    a, b = step[angle, piece, distance][:, None], -step[angle[:, None], piece[:, None], far]
    pairs = inside & down[angle[:, None], piece[:, None], far] & (torch.minimum(a, b) >= _BALANCE * torch.maximum(a, b))
    band[angle, piece, distance] = pairs
    loose = _grow(_grow(band, 2), 3)  # a band may drift by a pixel in position and width between pieces
    full = loose[:, : pieces - _MIN_PIECES + 1].clone()  # a run of _MIN_PIECES starts at each piece
    for offset in range(1, _MIN_PIECES):
        full &= loose[:, offset: pieces - _MIN_PIECES + 1 + offset]
    run = torch.zeros_like(band)
    for offset in range(_MIN_PIECES):
        run[:, offset: offset + full.shape[1]] |= full
    return run & band


def _grow(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """``mask`` or'ed with itself shifted by one either way along ``dim``."""
    grown = mask.clone()
    length = mask.shape[dim]
    grown.narrow(dim, 1, length - 1).logical_or_(mask.narrow(dim, 0, length - 1))
    grown.narrow(dim, 0, length - 1).logical_or_(mask.narrow(dim, 1, length - 1))
    return grown


def _piece_steps(smooth: torch.Tensor, usable: torch.Tensor, phi: torch.Tensor, along: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """``(2, angles, pieces, distances)``: the mean step across each line over each piece, one pixel either
    side and ``_WIDE_OFFSET`` pixels either side; NaN where fewer than half the piece's samples have both
    sides usable. Distance index ``i`` is the line ``i - reach`` pixels from the centre."""
    intensity, valid = sample_across_lines(smooth, usable, phi, along, normal)
    per_piece = _PIECE_PX // _ALONG_PX
    means = []
    for offset in (1, _WIDE_OFFSET):
        beyond, before = slice(_WIDE_OFFSET + offset, intensity.shape[-1] - _WIDE_OFFSET + offset), slice(_WIDE_OFFSET - offset, intensity.shape[-1] - _WIDE_OFFSET - offset)
        both = valid[..., beyond] & valid[..., before]
        difference = (intensity[..., beyond] - intensity[..., before]) * both
        total = difference.unflatten(1, (-1, per_piece)).sum(dim=2)
        count = both.unflatten(1, (-1, per_piece)).sum(dim=2).to(torch.float32)
        means.append(torch.where(count >= per_piece / 2, total / count.clamp(min=1), torch.full_like(total, math.nan)))
    return torch.stack(means)


def _draw_bands(phi: torch.Tensor, piece: torch.Tensor, distance: torch.Tensor, width: torch.Tensor, reach: int,
                rows: int, cols: int, interiors: bool = True) -> torch.Tensor:
    """The union of bands, each the rectangle of its piece along the line at normal angle ``phi`` and its
    ``width`` across it from ``distance - reach`` (a pixel and a half more on either side); without
    ``interiors``, only ``_SIDE_PX`` of it inside each side."""
    row, col = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32), indexing="ij")
    x, y = col - (cols - 1) / 2, row - (rows - 1) / 2
    result = torch.zeros(rows, cols, dtype=torch.bool)
    for first in range(0, len(phi), 64):
        chosen = slice(first, first + 64)
        cos, sin = torch.cos(phi[chosen])[:, None, None], torch.sin(phi[chosen])[:, None, None]
        n = x[None] * cos + y[None] * sin  # signed distance of every pixel along the normal
        t = -x[None] * sin + y[None] * cos  # position along the line
        start = (distance[chosen] - reach).to(torch.float32)[:, None, None]  # the step up sits here
        span = width[chosen].to(torch.float32)[:, None, None]
        t0 = (piece[chosen] * _PIECE_PX - reach).to(torch.float32)[:, None, None]
        inside = (n >= start - 1.5) & (n <= start + span + 1.5) & (t >= t0 - 0.5) & (t <= t0 + _PIECE_PX - 0.5)
        if not interiors:
            inside &= (n <= start + _SIDE_PX) | (n >= start + span - _SIDE_PX)
        result |= inside.any(dim=0)
    return result
