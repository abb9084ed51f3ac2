"""Turn a CT into the volume the projector integrates, and render one DRR."""

from __future__ import annotations

import torch

from .drr import Projector
from .errors import InputError
from .geometry import CArmGeometry
from .preprocess import hu_to_attenuation
from .volume import Volume

__all__ = ["render_drr", "rendering_volume", "spine_channels"]


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
