"""Step 7 of :func:`sopi.segment.segment_spine`: intervertebral discs.

The mean HU along the column through the vertebral-body centres (positions measured on the
local axis direction, so tilted discs are followed), in 1 mm bins, shows dark body interiors,
bright end plates and the discs between them. Two detectors: a dip between two end plates
that lie between two dark interiors, and the alternation of body and disc stretches between
end-plate peaks (thick lumbar discs no darker than a fatty marrow, discs at the edge of a
cropped field of view). The bone more than ``_DISC_ZONE_MM`` in front of the canal centre at
a disc's level is dropped.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .segment_grid import (
    _CANAL_RADIUS_MM,
    _DISC_DIP_HU,
    _DISC_STRETCH_RATIO,
    _DISC_ZONE_MM,
    _INTERIOR_MM,
    _MAX_GAP_MM,
    _PROFILE_BIN_MM,
    Array,
    _offsets,
    _runs,
)


def find_peaks(values: Array, prominence: float, distance: float) -> Array:
    """Indices of the peaks of a 1-D profile, as ``scipy.signal.find_peaks(values, prominence=...,
    distance=...)[0]`` gives them (scipy.signal costs about a second to import, more than the
    segmentation that needs it).

    A peak is a sample higher than its left neighbour and than the first different sample on
    its right (a flat top counts once, at its middle; the two ends never count). Peaks closer
    than ``distance`` samples to a higher kept peak are dropped, highest first; then those whose
    prominence (height above the higher of the lowest points on either side before a higher
    sample) is below ``prominence``.
    """
    x = np.asarray(values, dtype=float)
    peaks, i, last = [], 1, len(x) - 1
    while i < last:
        if x[i - 1] < x[i]:
            ahead = i + 1
            while ahead < last and x[ahead] == x[i]:
                ahead += 1
            if x[ahead] < x[i]:
                peaks.append((i + ahead - 1) // 2)
                i = ahead
        i += 1
    peaks = np.asarray(peaks, dtype=np.intp)
    keep = np.ones(len(peaks), bool)
    for j in np.argsort(x[peaks])[::-1]:  # highest first, ties in numpy's default sort order as scipy takes them
        if not keep[j]:
            continue
        near = np.abs(peaks - peaks[j]) < distance
        near[j] = False
        keep &= ~near
    peaks = peaks[keep]
    kept = []
    for peak in peaks:
        lows = []
        for step, end in ((-1, -1), (1, len(x))):
            k, low = peak, x[peak]
            while k != end and x[k] <= x[peak]:
                low = min(low, x[k])
                k += step
            lows.append(low)
        if x[peak] - max(lows) >= prominence:
            kept.append(peak)
    return np.asarray(kept, dtype=np.intp)


def _endplate_discs(profile: Array) -> Array:
    """Discs found from the end plates (1 mm bins of the column profile): the bright end
    plates are peaks, and the stretches between them alternate vertebral body, disc,
    body... A stretch is a disc when it is clearly shorter than each neighbouring stretch
    (< ``_DISC_STRETCH_RATIO`` x), at most ``_MAX_GAP_MM`` long, dips ``_DISC_DIP_HU`` below
    both of its plates, and its floor is no darker than the neighbouring stretches' floors
    (this detector is for discs no darker than the marrow -- thick lumbar discs beside a
    fatty marrow, where the dip test between dark interiors cannot work; a darker disc is
    the dip test's, and a stretch darker than its neighbours is a body interior whose end
    plates were missed). The disc is the stretch's part below halfway between its floor and
    its lower plate, at most 40 % of the stretch around the floor. Needs no dark interior on
    both sides (a cropped field of view)."""
    disc = np.zeros(len(profile), bool)
    if len(profile) < 8:
        return disc
    low, high = np.percentile(profile, [20, 90])
    smooth = ndi.gaussian_filter1d(profile, 1.0 / _PROFILE_BIN_MM)
    peaks = find_peaks(smooth, prominence=max(_DISC_DIP_HU, 0.35 * (high - low)), distance=max(1, int(3.0 / _PROFILE_BIN_MM)))
    if len(peaks) < 2:
        return disc
    lengths = np.diff(peaks) * _PROFILE_BIN_MM
    floors = [float(smooth[a : b + 1].min()) for a, b in zip(peaks[:-1], peaks[1:])]
    for i, length in enumerate(lengths):
        near = [j for j in (i - 1, i + 1) if 0 <= j < len(lengths)]
        if length > _MAX_GAP_MM or not near or length >= _DISC_STRETCH_RATIO * min(lengths[j] for j in near):
            continue
        a, b = peaks[i], peaks[i + 1]
        stretch = smooth[a : b + 1]
        floor = floors[i]
        if floor < max(floors[j] for j in near):
            continue
        plate = min(float(smooth[a]), float(smooth[b]))
        if plate - floor < _DISC_DIP_HU:
            continue
        lowest = int(np.argmin(stretch))
        half = max(1, int(round(0.2 * len(stretch))))  # at most 40 % of the stretch: end plates blur into the disc
        for start, stop in _runs(stretch < 0.5 * (plate + floor)):
            if start <= lowest < stop:
                disc[a + max(start, lowest - half) : a + min(stop, lowest + half + 1)] = True
    return disc


def _remove_discs(selected: Array, hu: Array, axis: Array, spacing: Array) -> Array:
    """Step 7: drop the vertebral-body zone at the intervertebral discs that show as dips."""
    count = selected.shape[0]
    dy, dx = _offsets(selected.shape, axis, spacing)
    zone = selected & (dy < -_CANAL_RADIUS_MM) & (np.abs(dx) < 20.0)
    voxels = zone.sum(axis=(1, 2))
    valid = voxels * spacing[1] * spacing[2] >= 150.0
    if valid.sum() < 3 or count < 2:
        return selected
    ks = np.flatnonzero(valid)
    centre = np.where(zone, dy, 0.0).sum(axis=(1, 2))[ks] / voxels[ks]  # body centre, mm anterior
    centre = ndi.median_filter(np.interp(np.arange(count), ks, centre), size=2 * int(15.0 / spacing[0]) + 1, mode="nearest")
    z_mm = np.arange(count) * spacing[0]
    slope = np.stack([np.gradient(axis[:, j] * spacing[1 + j], z_mm) for j in (0, 1)], axis=1)
    norm = np.sqrt(1.0 + (slope**2).sum(axis=1))[:, None, None]
    # position along the column: projection on the local axis direction (follows tilted discs)
    position = (z_mm[:, None, None] * norm**2 + slope[:, 0, None, None] * dy + slope[:, 1, None, None] * dx) / norm
    cylinder = (np.hypot(dy - centre[:, None, None], dx) <= 6.0) & valid[:, None, None]
    if not cylinder.any():
        return selected
    origin = position[cylinder].min()
    bins = ((position[cylinder] - origin) / _PROFILE_BIN_MM).astype(int)
    counts = np.bincount(bins)
    index = np.arange(len(counts))
    profile = np.bincount(bins, weights=hu[cylinder]) / np.maximum(counts, 1)
    profile = np.interp(index, index[counts > 0], profile[counts > 0])
    low, high = np.percentile(profile, [20, 90])
    interiors = [r for r in _runs(profile < 0.5 * (low + high)) if (r[1] - r[0]) * _PROFILE_BIN_MM >= _INTERIOR_MM]
    disc = np.zeros(len(profile), bool)
    for (_, end), (start, _) in zip(interiors[:-1], interiors[1:]):
        gap = profile[end:start]  # end plate, disc, end plate
        n = len(gap)
        if n < 3 or n * _PROFILE_BIN_MM > _MAX_GAP_MM:
            continue
        left = int(np.argmax(gap[: (n + 1) // 2]))
        right = n // 2 + int(np.argmax(gap[n // 2 :]))
        between = gap[left + 1 : right]
        if len(between) == 0 or min(gap[left], gap[right]) - between.min() < _DISC_DIP_HU:
            continue
        lowest = int(np.argmin(between))
        for a, b in _runs(between < 0.5 * (min(gap[left], gap[right]) + between.min())):
            if a <= lowest < b:
                disc[end + left + 1 + a : end + left + 1 + b] = True
    disc |= _endplate_discs(profile)
    if not disc.any():
        return selected
    bin_of = np.floor((position - origin) / _PROFILE_BIN_MM).astype(int)
    inside = (bin_of >= 0) & (bin_of < len(disc))
    return selected & ~(inside & disc[np.clip(bin_of, 0, len(disc) - 1)] & (dy < -_DISC_ZONE_MM))
