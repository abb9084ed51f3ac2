"""What the networks see: a CT cube in the nominal view's frame and a standardised X-ray.

The CT cube is resampled in the *isocentric camera frame* of a nominal view
(:class:`sopi.geometry.NominalView`): its axes are the camera's (x along detector
columns, y along detector rows, z along the principal ray, towards the detector) and
its centre is the isocentre. Array order is ``(z, y, x)``, so folding depth into
channels gives a 2D map that lines up with the detector. Values are attenuation
relative to water (water = 1), zero outside the CT and (optionally) outside the spine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry import NominalView, invert_rigid
from ..io_xray import resize_image
from ..preprocess import MU_WATER_PER_MM
from ..volume import Volume

__all__ = ["ct_cube", "network_image", "standardize_xray"]


def ct_cube(attenuation: Volume, view: NominalView, size: int, side_mm: float, mask: Volume | None = None) -> torch.Tensor:
    """``(1, size, size, size)`` float32 cube of edge ``side_mm`` about the isocentre, axes ``(z, y, x)`` of the camera.

    Args:
        attenuation: linear attenuation (1/mm) on its world grid (see :func:`sopi.render.rendering_volume`).
        view: the nominal view whose camera axes and isocentre define the cube.
        mask: optional spine mask on the same grid; voxels outside it are zeroed (the paper's ``V_seg``).
    """
    data = attenuation.data.to(torch.float32)
    if mask is not None:
        data = data * (mask.data != 0)
    spacing = side_mm / size
    offsets = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0) * spacing
    z, y, x = torch.meshgrid(offsets, offsets, offsets, indexing="ij")
    iso_points = torch.stack([x, y, z], dim=-1).reshape(-1, 3)  # camera axes, origin at the isocentre
    world_from_camera = invert_rigid(view.camera_from_world)
    world = iso_points @ world_from_camera[:3, :3].T + view.isocenter_world
    index = world @ attenuation.index_from_world[:3, :3].T + attenuation.index_from_world[:3, 3]  # (i, j, k)
    grid_size = torch.tensor(attenuation.grid_shape, dtype=torch.float64)
    normalized = (2.0 * index + 1.0) / grid_size - 1.0
    sampled = F.grid_sample(
        data[None, None], normalized.to(torch.float32).reshape(1, size, size, size, 3),
        mode="bilinear", padding_mode="zeros", align_corners=False,
    )
    return (sampled[0] / MU_WATER_PER_MM).contiguous()


def standardize_xray(images: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Zero mean, unit variance per image over the last two dims (``(..., rows, cols)``).

    ``sqrt(var + eps^2)`` keeps the gradient finite for a blank image (a spine-only DRR
    with the spine out of view), where the gradient of ``std`` is 0 / 0.
    """
    mean = images.mean(dim=(-2, -1), keepdim=True)
    spread = (images.var(dim=(-2, -1), keepdim=True) + eps * eps).sqrt()
    return (images - mean) / spread


def network_image(xray: torch.Tensor, size: int) -> torch.Tensor:
    """A ``(rows, cols)`` X-ray as a network sees it: area-resampled to ``size x size``, standardised."""
    return standardize_xray(resize_image(xray.to(torch.float32), (size, size)))
