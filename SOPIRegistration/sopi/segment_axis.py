"""Step 3 of :func:`sopi.segment.segment_spine`: the spine axis (the spinal canal's centre
on every axial slice of the working grid).

Per slice, a canal candidate is a dark hole enclosed by bone with a vertebral body in front
of it and left-right symmetric bone around it; no body outline is needed (cropped fields of
view). The candidates are linked into the best chain along z, interpolated and smoothed. A
CT with no such chain holds no vertebral column: :class:`~sopi.errors.NoVertebralColumn`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .errors import NoVertebralColumn
from .segment_grid import (
    _CANAL_AREA_MM2,
    _CANAL_BODY_MM,
    _CANAL_CLOSE_MM,
    _CANAL_MAX_HU,
    _FILL_MIN_HU,
    _MIN_CANAL_SLICES,
    _MIN_SYMMETRY,
    _SYMMETRY_MM,
    Array,
    _disk,
    _enclosed,
    _per_slice,
)


def _outline_visible(body: Array) -> bool:
    """True when a slice's body mask touches neither its anterior nor its posterior edge
    (the field of view shows the body's outline, so its midline and halves mean something)."""
    return not (body[0].any() or body[-1].any())


def _mirror_overlap(bone: Array, row: float, col: float, spacing: Array) -> float:
    """Fraction of the bone within ``_SYMMETRY_MM`` of (row, col) whose mirror image about
    the column ``col`` is bone too: a vertebra is left-right symmetric about its canal, a
    neural foramen or the gap between a rib and a vertebra is not."""
    half_r, half_c = int(_SYMMETRY_MM / spacing[0]), int(_SYMMETRY_MM / spacing[1])
    r0, c0 = int(round(row)), int(round(col))
    window = np.zeros((2 * half_r + 1, 2 * half_c + 1), bool)
    rs, re = max(0, r0 - half_r), min(bone.shape[0], r0 + half_r + 1)
    cs, ce = max(0, c0 - half_c), min(bone.shape[1], c0 + half_c + 1)
    window[rs - r0 + half_r : re - r0 + half_r, cs - c0 + half_c : ce - c0 + half_c] = bone[rs:re, cs:ce]
    return float((window & window[:, ::-1]).sum()) / max(1.0, float(window.sum()))


def _canal_candidates(bone: Array, body: Array, work: Array, spacing: Array) -> Array:
    """Step 3: spinal-canal candidates (N, 4) = (slice, row, column, symmetry) on the working grid.

    Per slice: dark (HU < 60) holes of the closed bone mask of 60-900 mm2, not elongated
    (extent ratio <= 3), with a vertebral body in front: bone (or the bright interior of a
    closed bone ring) running at least ``_CANAL_BODY_MM`` forwards from the hole's
    anterior wall within 5 mm of its centre line (a long bone's marrow cavity has only its
    cortex there). Where the slice shows the body's outline, the hole must also lie in the
    posterior 60 % of the body and within 50 mm of its midline. The bone around it must be
    left-right symmetric about it (:func:`_mirror_overlap` >= ``_MIN_SYMMETRY``).
    """
    count = bone.shape[0]
    pixel = spacing[1] * spacing[2]
    strip = max(1, int(round(5.0 / spacing[2])))

    def candidates(k: int) -> list[tuple[int, float, float, float]]:
        found: list[tuple[int, float, float, float]] = []
        if body[k].sum() * pixel < 1000.0 or not bone[k].any():
            return found
        outline = _outline_visible(body[k])
        r_lo, c_lo, r_hi, c_hi = 0, 0, bone.shape[1], bone.shape[2]
        if outline:  # only where a canal may lie, with room for the symmetry test
            body_rows, body_cols = np.nonzero(body[k])
            top, bottom, middle = body_rows.min(), body_rows.max(), body_cols.mean()
            margin_r, margin_c = (_SYMMETRY_MM + 5.0) / spacing[1], (50.0 + _SYMMETRY_MM + 5.0) / spacing[2]
            r_lo, r_hi = max(0, int(top + 0.4 * (bottom - top) - margin_r)), int(bottom) + 2
            c_lo, c_hi = max(0, int(middle - margin_c)), int(middle + margin_c) + 2
        slab, hu = bone[k, r_lo:r_hi, c_lo:c_hi], work[k, r_lo:r_hi, c_lo:c_hi]
        if not slab.any():
            return found
        closed = ndi.binary_closing(slab, _disk(2.0, spacing[1:])) | slab
        for radius in _CANAL_CLOSE_MM:  # a wider closing bridges gaps in a thin or noisy ring
            inside = _enclosed(closed, _disk(radius, spacing[1:])) if radius > 2.0 else ndi.binary_fill_holes(closed) & ~closed
            holes, n = ndi.label(inside)
            if n == 0:
                continue
            index = np.arange(1, n + 1)
            area = np.bincount(holes.ravel(), minlength=n + 1)[1:] * pixel
            ok = (area >= _CANAL_AREA_MM2[0]) & (area <= _CANAL_AREA_MM2[1])
            if not ok.any():
                continue
            ok &= np.asarray(ndi.mean(hu, holes, index)) < _CANAL_MAX_HU
            solid = closed | (inside & (hu > _FILL_MIN_HU))
            boxes = ndi.find_objects(holes)
            before = len(found)
            for h in np.flatnonzero(ok):
                rows, cols = boxes[h]
                height, width = (rows.stop - rows.start) * spacing[1], (cols.stop - cols.start) * spacing[2]
                if max(height, width) > 3.0 * min(height, width):
                    continue
                rr, cc = np.nonzero(holes[rows, cols] == h + 1)
                r0, c0 = rr.mean() + rows.start, cc.mean() + cols.start
                if outline and (r0 + r_lo < top + 0.4 * (bottom - top) or abs(c0 + c_lo - middle) * spacing[2] > 50.0):
                    continue
                ci = int(round(c0))
                front = solid[: rows.start, max(0, ci - strip) : ci + strip + 1].any(axis=1)[::-1]
                run = int(np.argmin(front)) if not front.all() else len(front)
                if run * spacing[1] >= _CANAL_BODY_MM:
                    symmetry = _mirror_overlap(closed, r0, c0, spacing[1:])
                    if symmetry >= _MIN_SYMMETRY:
                        found.append((k, r0 + r_lo, c0 + c_lo, symmetry))
            if len(found) > before:
                break
        return found

    found = [item for per_slice in _per_slice(candidates, range(count)) for item in per_slice]
    return np.array(found, dtype=float).reshape(-1, 4)


def _chain(points: Array, spacing: Array) -> Array:
    """(slice, row, column) of the best run of canal candidates (N, 4): at most one per
    slice, each within 4 mm + 0.6 x (distance along z) of the previous one in the slice
    plane, gaps <= 60 mm; the run with the largest sum of symmetries."""
    if len(points) == 0:
        return points[:, :3]
    points = points[np.argsort(points[:, 0], kind="stable")]
    mm = points[:, :3] * spacing
    best = points[:, 3].copy()
    previous = np.full(len(points), -1)
    for i in range(len(points)):
        dz = mm[i, 0] - mm[:i, 0]
        near = (dz > 0) & (dz <= 60.0) & (np.hypot(*(mm[i, 1:] - mm[:i, 1:]).T) <= 4.0 + 0.6 * dz)
        if near.any():
            j = np.flatnonzero(near)[np.argmax(best[:i][near])]
            best[i], previous[i] = best[j] + points[i, 3], j
    i, chain = int(np.argmax(best)), []
    while i >= 0:
        chain.append(i)
        i = previous[i]
    return points[chain[::-1], :3]


def _track(ks: Array, values: Array, count: int, spacing: Array) -> Array:
    """(K, 2) (row, column) given at slices ``ks``, interpolated. Beyond the ends the track
    follows a straight line fitted (least squares) to the points within 30 mm of the end
    when they span at least 15 mm along z (slope at most 0.5 mm per mm), else stays level:
    a slope from two close, jittery canal centres would send it astray."""
    order = np.argsort(ks)
    ks, values = ks[order], values[order]
    track = np.stack([np.interp(np.arange(count), ks, values[:, j]) for j in range(2)], axis=1)
    limit = 0.5 * spacing[0] / spacing[1:]
    reach = 30.0 / spacing[0]
    for end, tail in ((ks[0], np.arange(0, int(ks[0]))), (ks[-1], np.arange(int(ks[-1]) + 1, count))):
        if len(tail) == 0:
            continue
        near = np.abs(ks - end) <= reach
        slope = np.zeros(2)
        if np.ptp(ks[near]) * spacing[0] >= 15.0:
            slope = np.clip(np.polyfit(ks[near] - end, values[near], 1)[0], -limit, limit)
        track[tail] = track[int(end)] + (tail[:, None] - end) * slope
    return track


def _spine_axis(bone: Array, body: Array, work: Array, spacing: Array) -> Array:
    """Step 3: (K, 2) canal centre (row, column) per slice on the working grid."""
    count = bone.shape[0]
    points = _chain(_canal_candidates(bone, body, work, spacing), spacing)
    if len(points) < _MIN_CANAL_SLICES:
        raise NoVertebralColumn(
            "segment_spine: no vertebral column found (no spinal canal: a dark hole enclosed by bone with a "
            "vertebral body in front of it); is this a CT of the trunk, in HU?"
        )
    return ndi.gaussian_filter1d(_track(points[:, 0], points[:, 1:], count, spacing), 5.0 / spacing[0], axis=0, mode="nearest")
