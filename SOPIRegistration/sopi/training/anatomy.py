"""Anatomical augmentation: new "patients" made from one CT and its spine labels.

One seeded draw warps a CT and its labels with the *same* spatial map, so the labels keep
covering the anatomy they marked:

* a random affine about the spine centroid: rotation (``rotation_deg`` per axis), isotropic
  scale (``scale``) and a per-axis stretch (``anisotropy``), e.g. a taller or wider patient;
* a smooth elastic displacement: Gaussian noise on control points every
  ``elastic_spacing_mm``, interpolated (trilinear) to every voxel, at most ``elastic_mm``;
* resampling onto a new isotropic grid (``spacing_mm``, as CTs come at 0.6-3 mm);
* a field-of-view crop along the body's long axis (probability ``crop_p``, keeping
  ``crop_keep`` of the extent, never the spine centroid out), as scans end anywhere.

The CT alone then gets an HU scale and offset (scanner calibration and kernels). Labels are
resampled nearest-neighbour, the CT trilinearly; outside the source the CT is air
(-1000 HU) and the labels 0. Frames: the volumes' own LPS world frame; the output keeps the
source's axis directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..geometry import rotation_from_euler
from ..segment import mask_centroid_world
from ..volume import Volume

__all__ = ["AnatomySettings", "anatomical_variant", "anatomical_variants"]

_AIR_HU = -1000.0


@dataclass(frozen=True)
class AnatomySettings:
    """Ranges of one anatomical draw (degrees, millimetres, HU); every range is sampled uniformly."""

    rotation_deg: float = 6.0
    scale: tuple[float, float] = (0.9, 1.1)
    anisotropy: float = 0.06
    elastic_mm: float = 4.0
    elastic_spacing_mm: float = 50.0
    spacing_mm: tuple[float, float] = (1.2, 2.5)
    crop_p: float = 0.5
    crop_keep: tuple[float, float] = (0.5, 0.9)
    hu_scale: tuple[float, float] = (0.92, 1.08)
    hu_offset: tuple[float, float] = (-30.0, 30.0)


def anatomical_variants(ct: Volume, labels: Volume, count: int, seed: int, settings: AnatomySettings | None = None) -> list[tuple[Volume, Volume]]:
    """``count`` seeded ``(ct, labels)`` variants (draw ``k`` uses seed ``seed * 1000003 + k``)."""
    if count < 0:
        raise InputError(f"anatomical variants: count must be >= 0, got {count}")
    return [anatomical_variant(ct, labels, seed * 1_000_003 + index, settings) for index in range(count)]


def anatomical_variant(ct: Volume, labels: Volume, seed: int, settings: AnatomySettings | None = None) -> tuple[Volume, Volume]:
    """One warped ``(ct, labels)`` pair; ``labels`` (non-zero = spine, any ids) on ``ct``'s grid."""
    settings = settings or AnatomySettings()
    if tuple(labels.data.shape) != tuple(ct.data.shape) or not torch.allclose(labels.world_from_index, ct.world_from_index):
        raise InputError("anatomical variant: the labels must lie on the CT's grid")
    if not bool((labels.data != 0).any()):
        raise InputError("anatomical variant: the labels are empty; expected the spine marked non-zero")
    generator = torch.Generator().manual_seed(int(seed))

    def uniform(low: float, high: float, size: int = 1) -> torch.Tensor:
        return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)

    centre = mask_centroid_world(labels)
    source_from_new = _random_linear_map(settings, uniform)  # about the centre: the new anatomy back to the source's
    grid, counts = _output_grid(ct, centre, settings, uniform)
    world = _grid_world_points(grid, counts)  # (K, J, I, 3) LPS mm of the output voxels
    displacement = _elastic_field(world.shape[:3], grid, settings, generator)
    source_world = (world - centre) @ source_from_new.T + centre + displacement
    coordinates = _normalised_index(ct, source_world)
    warped_ct = _sample(ct.data.to(torch.float32) - _AIR_HU, coordinates, "bilinear") + _AIR_HU
    warped_labels = _sample(labels.data.to(torch.float32), coordinates, "nearest").round().to(labels.data.dtype)
    gain, offset = float(uniform(*settings.hu_scale)), float(uniform(*settings.hu_offset))
    body = warped_ct > _AIR_HU + 1.0  # air stays air
    warped_ct = torch.where(body, (warped_ct - _AIR_HU) * gain + _AIR_HU + offset, warped_ct)
    return Volume(warped_ct.to(ct.data.dtype), grid), Volume(warped_labels, grid)


def _random_linear_map(settings: AnatomySettings, uniform) -> torch.Tensor:
    """3x3 ``A = R S^-1``: a source point = A (new point - centre) + centre (a bigger patient samples
    the source more densely); R from uniform angles about the three axes (``rotation_from_euler``)."""
    rotation = rotation_from_euler(torch.deg2rad(uniform(-settings.rotation_deg, settings.rotation_deg, 3)))
    stretch = uniform(*settings.scale) * (1 + uniform(-settings.anisotropy, settings.anisotropy, 3))
    return rotation @ torch.diag(1.0 / stretch)


def _output_grid(ct: Volume, centre: torch.Tensor, settings: AnatomySettings, uniform) -> tuple[torch.Tensor, list[int]]:
    """``(world_from_index, (I, J, K) counts)`` of the output: the source's directions, a drawn
    isotropic spacing, the source's extent (cropped along its superior-inferior index axis with
    probability ``crop_p``)."""
    directions = ct.world_from_index[:3, :3] / ct.spacing[None, :]
    shape = torch.tensor(ct.grid_shape, dtype=torch.float64)
    extent = shape * ct.spacing  # mm along i, j, k
    low = torch.zeros(3, dtype=torch.float64)
    if float(uniform(0.0, 1.0)) < settings.crop_p:
        axis = int(torch.argmax(directions[2].abs() * extent))  # the index axis closest to superior-inferior
        keep = float(uniform(*settings.crop_keep)) * float(extent[axis])
        centre_index = torch.linalg.solve(ct.world_from_index[:3, :3], centre - ct.world_from_index[:3, 3])
        centre_mm = float(centre_index[axis] * ct.spacing[axis])
        start_low, start_high = max(0.0, centre_mm - keep + 10.0), min(float(extent[axis]) - keep, centre_mm - 10.0)
        if start_high > start_low:
            low[axis] = float(uniform(start_low, start_high))
            extent[axis] = keep
    spacing = float(uniform(*settings.spacing_mm))
    counts = torch.clamp((extent / spacing).floor(), min=2)
    grid = torch.eye(4, dtype=torch.float64)
    grid[:3, :3] = directions * spacing
    grid[:3, 3] = ct.world_from_index[:3, 3] + directions @ (low - ct.spacing / 2 + spacing / 2)
    return grid, counts.to(torch.int64).tolist()


def _grid_world_points(grid: torch.Tensor, counts: list[int]) -> torch.Tensor:
    i_count, j_count, k_count = counts
    k, j, i = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in (k_count, j_count, i_count)), indexing="ij")
    return torch.stack([i, j, k], dim=-1) @ grid[:3, :3].T + grid[:3, 3]


def _elastic_field(shape: tuple[int, int, int], grid: torch.Tensor, settings: AnatomySettings, generator: torch.Generator) -> torch.Tensor:
    """(K, J, I, 3) smooth displacement (mm), at most ``elastic_mm`` in length."""
    if settings.elastic_mm <= 0:
        return torch.zeros(*shape, 3, dtype=torch.float64)
    spacing = float(grid[:3, 0].norm())
    nodes = [max(2, math.ceil(n * spacing / settings.elastic_spacing_mm) + 1) for n in shape]
    coarse = torch.randn(1, 3, *nodes, generator=generator, dtype=torch.float64)
    field = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0].permute(1, 2, 3, 0)
    length = field.norm(dim=-1).max().clamp(min=1e-12)
    return field * (settings.elastic_mm / length)


def _normalised_index(volume: Volume, world: torch.Tensor) -> torch.Tensor:
    """grid_sample coordinates (x = i, y = j, z = k in [-1, 1], align_corners=True) of world points."""
    index_from_world = torch.linalg.inv(volume.world_from_index)
    index = world @ index_from_world[:3, :3].T + index_from_world[:3, 3]
    sizes = torch.tensor(volume.grid_shape, dtype=torch.float64)
    return (2 * index / (sizes - 1).clamp(min=1) - 1).to(torch.float32)


def _sample(data: torch.Tensor, coordinates: torch.Tensor, mode: str) -> torch.Tensor:
    return F.grid_sample(data[None, None], coordinates[None], mode=mode, padding_mode="zeros", align_corners=True)[0, 0]
