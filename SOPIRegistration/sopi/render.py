"""Turn a CT into the volume the projector integrates, and render one DRR."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .drr import Projector
from .errors import InputError
from .geometry import CArmGeometry
from .preprocess import hu_to_attenuation
from .volume import Volume

__all__ = ["WORKING_SPACING_MM", "binned_volume", "render_drr", "rendering_volume", "spine_channels", "working_factors", "working_volumes"]


def rendering_volume(ct: Volume, attenuation: str = "hu", mask: Volume | None = None) -> Volume:
    """The float32 volume to integrate.

    Args:
        ct: CT in HU (or any scalar volume with ``attenuation="raw"``).
        attenuation: ``"hu"`` converts HU to linear attenuation (1/mm, see
            :func:`sopi.preprocess.hu_to_attenuation`); ``"raw"`` keeps the voxel values.
        mask: optional mask on the CT grid; voxels where it is zero are dropped
            (a spine-only DRR, the paper's ``V_seg``).
    """
    if attenuation == "hu":
        data = hu_to_attenuation(ct.data.to(torch.float32))
    elif attenuation == "raw":
        data = ct.data.to(torch.float32)
    else:
        raise InputError(f"attenuation: expected 'hu' or 'raw', got {attenuation!r}")
    if mask is not None:
        if tuple(mask.data.shape) != tuple(ct.data.shape):
            raise InputError(f"mask grid {tuple(mask.data.shape)} differs from the CT grid {tuple(ct.data.shape)}")
        data = data * (mask.data != 0)
    return ct.with_data(data)


#: Registration renders a CT binned to voxels no finer than this along any axis (mm; :func:`working_factors`): the
#: spacing of the sample CT and the TPTBox crop the methods were tuned on (and reach sub-millimetre results with), near
#: the 1.07 mm that the finest optimised level's pixels (128 on a 0.8 mm 256-pixel detector) span at the isocentre.
#: Finer voxels cost memory and blending time and add nothing those levels resolve. Binned, a chest CT with 0.7 mm
#: slices took a quarter less time from a wide start and a quarter less memory, as accurately (docs/benchmarks.md,
#: "A fine CT rendered binned").
WORKING_SPACING_MM = 1.5


def working_factors(volume: Volume, finest_mm: float | None = None) -> tuple[int, int, int]:
    """Integer factors ``(i, j, k)`` that bin ``volume``'s voxels to at most ``finest_mm`` (default
    :data:`WORKING_SPACING_MM`) along each axis: the largest that keeps the binned spacing within it (1 where the
    voxels are already that coarse or coarser)."""
    finest_mm = WORKING_SPACING_MM if finest_mm is None else finest_mm
    return tuple(max(1, math.floor(finest_mm / float(spacing) + 1e-9)) for spacing in volume.spacing)  # type: ignore[return-value]


def binned_volume(volume: Volume, factors: tuple[int, int, int], reduce: str = "mean") -> Volume:
    """``volume`` binned by ``factors`` ``(i, j, k)``: the block means (``reduce="mean"``, an attenuation volume), or
    the block maxima (``"max"``, a mask: the binned mask covers every voxel the original did), on the grid whose
    voxel centres are the full blocks' centres. A partial block at the far end of an axis holds the mean (maximum)
    of the voxels it covers. Returned as it is where every factor is 1."""
    if reduce not in ("mean", "max"):
        raise InputError(f"reduce: expected 'mean' or 'max', got {reduce!r}")
    if all(factor == 1 for factor in factors):
        return volume
    kernel = tuple(reversed(factors))  # data order (k, j, i)
    data = volume.data[None, None]
    if not data.is_floating_point():  # a mask: pooled as float, returned in its own type
        data = data.to(torch.float32)
    if reduce == "mean":
        binned = F.avg_pool3d(data, kernel, stride=kernel, ceil_mode=True)
    else:
        binned = F.max_pool3d(data, kernel, stride=kernel, ceil_mode=True)
    binned = binned[0, 0].to(volume.data.dtype)
    index_from_binned = torch.eye(4, dtype=torch.float64)
    for axis, factor in enumerate(factors):  # binned index b covers indices f b .. f b + f - 1, centred at f b + (f - 1) / 2
        index_from_binned[axis, axis] = factor
        index_from_binned[axis, 3] = (factor - 1) / 2
    return Volume(binned, volume.world_from_index @ index_from_binned)


def working_volumes(ct: Volume, spine: Volume | None) -> tuple[Volume, Volume | None, tuple[int, int, int]]:
    """What registration renders of a CT in HU and its 0/1 spine mask (None: none): the attenuation volume and the mask,
    both binned by :func:`working_factors` (block means, block maxima), and the factors ``(i, j, k)``."""
    factors = working_factors(ct)
    attenuation = binned_volume(rendering_volume(ct, "hu"), factors)
    return attenuation, None if spine is None else binned_volume(spine, factors, "max"), factors


def spine_channels(attenuation: Volume, spine: Volume, moving_image: str = "spine") -> Volume:
    """Two channels on the CT grid: the fine module's moving volume and the 0/1 spine mask (its
    projection is the fine module's ``M'``).

    ``moving_image``: ``"spine"``, the spine-only attenuation (the paper's ``V_seg``), or
    ``"ct"``, the whole CT's attenuation (what an X-ray shows).
    """
    inside = (spine.data != 0).to(attenuation.data.dtype)
    moving = attenuation.data * inside if moving_image == "spine" else attenuation.data
    return attenuation.with_data(torch.stack([moving, inside]))


def render_drr(
    volume: Volume,
    geometry: CArmGeometry,
    camera_from_world: torch.Tensor,
    step_mm: float = 1.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One ``(rows, cols)`` DRR on the CPU (no gradient) for a ``(4, 4)`` pose."""
    projector = Projector(volume, geometry, step_mm=step_mm).to(device)
    with torch.no_grad():
        return projector(camera_from_world.to(device)).cpu()
