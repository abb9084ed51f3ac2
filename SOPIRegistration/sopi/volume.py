"""A 3D image on a world grid: voxel tensor plus its ``world_from_index`` affine (LPS mm)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from .errors import InputError

__all__ = ["Volume", "world_from_index_affine"]


def world_from_index_affine(
    origin: tuple[float, ...], spacing: tuple[float, ...], direction: tuple[float, ...]
) -> torch.Tensor:
    """4x4 float64 ``world_from_index`` from ITK origin, spacing and row-major direction."""
    matrix = torch.eye(4, dtype=torch.float64)
    direction_matrix = torch.tensor(direction, dtype=torch.float64).reshape(3, 3)
    matrix[:3, :3] = direction_matrix * torch.tensor(spacing, dtype=torch.float64)[None, :]
    matrix[:3, 3] = torch.tensor(origin, dtype=torch.float64)
    return matrix


@dataclass
class Volume:
    """Voxels and their place in the world.

    Attributes:
        data: voxel tensor ``(K, J, I)`` (slice, row, column; SimpleITK's array order)
            or ``(C, K, J, I)`` for several channels on one grid.
        world_from_index: (4, 4) float64 affine mapping a continuous ITK index
            ``(i, j, k, 1)`` (column, row, slice) to LPS millimetres.
    """

    data: torch.Tensor
    world_from_index: torch.Tensor

    def __post_init__(self) -> None:
        if self.data.ndim not in (3, 4):
            raise InputError(f"volume: expected a 3D (K, J, I) or 4D (C, K, J, I) tensor, got shape {tuple(self.data.shape)}")
        if min(self.data.shape) < 1:
            raise InputError(f"volume: empty voxel grid {tuple(self.data.shape)}")
        self.world_from_index = torch.as_tensor(self.world_from_index, dtype=torch.float64).cpu()
        if self.world_from_index.shape != (4, 4):
            raise InputError("volume: world_from_index must be 4x4")
        if abs(float(torch.det(self.world_from_index[:3, :3]))) < 1e-12:
            raise InputError("volume: world_from_index is singular (zero spacing or degenerate direction)")

    # ------------------------------------------------------------------ geometry

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Voxel counts ``(I, J, K)`` along the index axes (columns, rows, slices)."""
        return tuple(int(n) for n in reversed(self.data.shape[-3:]))  # type: ignore[return-value]

    @property
    def spacing(self) -> torch.Tensor:
        """(3,) voxel spacing in mm along ``i, j, k``."""
        return self.world_from_index[:3, :3].norm(dim=0)

    @property
    def direction(self) -> torch.Tensor:
        """(3, 3) direction cosines; column ``a`` is index axis ``a`` in LPS."""
        return self.world_from_index[:3, :3] / self.spacing[None, :]

    @property
    def origin(self) -> torch.Tensor:
        """(3,) world position of voxel ``(0, 0, 0)``'s centre, LPS mm."""
        return self.world_from_index[:3, 3].clone()

    @property
    def index_from_world(self) -> torch.Tensor:
        """(4, 4) inverse of :attr:`world_from_index`."""
        return torch.linalg.inv(self.world_from_index)

    @property
    def center_world(self) -> torch.Tensor:
        """(3,) world position of the grid centre, LPS mm."""
        center_index = (torch.tensor(self.grid_shape, dtype=torch.float64) - 1.0) / 2.0
        return self.world_from_index[:3, :3] @ center_index + self.world_from_index[:3, 3]

    def corners_world(self) -> torch.Tensor:
        """(8, 3) world positions of the outer voxel-edge corners (the volume's box)."""
        sizes = torch.tensor(self.grid_shape, dtype=torch.float64)
        unit = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.float64)
        index = unit * sizes - 0.5
        return index @ self.world_from_index[:3, :3].T + self.world_from_index[:3, 3]

    def with_data(self, data: torch.Tensor) -> Volume:
        """A volume on the same grid with other voxels."""
        return Volume(data, self.world_from_index.clone())

    def to(self, *args, **kwargs) -> Volume:
        """Move or cast the voxel tensor (the affine stays float64 on the CPU)."""
        return Volume(self.data.to(*args, **kwargs), self.world_from_index)

    # ------------------------------------------------------------------ SimpleITK

    @classmethod
    def from_sitk(cls, image: sitk.Image, dtype: torch.dtype | None = None) -> Volume:
        """Wrap a 3D scalar SimpleITK image (copying its voxels)."""
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(
                f"volume: expected a 3D scalar image, got {image.GetDimension()}D with "
                f"{image.GetNumberOfComponentsPerPixel()} component(s)"
            )
        array = sitk.GetArrayFromImage(image)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if dtype is not None:
            tensor = tensor.to(dtype)
        affine = world_from_index_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
        return cls(tensor, affine)

    def to_sitk(self) -> sitk.Image:
        """A SimpleITK image with the same voxels and world geometry (single channel only)."""
        if self.data.ndim != 3:
            raise InputError("volume: only single-channel volumes convert to SimpleITK")
        image = sitk.GetImageFromArray(self.data.detach().cpu().numpy())
        image.SetSpacing(self.spacing.tolist())
        image.SetOrigin(self.origin.tolist())
        image.SetDirection(self.direction.reshape(-1).tolist())
        return image
