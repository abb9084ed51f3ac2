"""The render-and-compare objective that every registration method optimises.

Poses are searched as paper parameters ``theta`` (deg, mm) relative to the initial
pose, pivoting about an isocentre (:class:`sopi.geometry.NominalView`), so rotations
turn the CT about the spine rather than about the world origin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..drr import Projector
from ..errors import InputError
from ..geometry import CArmGeometry, NominalView, invert_rigid
from ..io_xray import resize_image
from ..similarity import SIMILARITIES
from ..volume import Volume

__all__ = ["PoseProblem", "default_pivot"]


def default_pivot(initial_pose: torch.Tensor, geometry: CArmGeometry) -> torch.Tensor:
    """The isocentre of the initial view: ``source_to_isocenter_mm`` along its principal ray (LPS mm)."""
    world_from_camera = invert_rigid(initial_pose.to(torch.float64))
    return world_from_camera[:3, :3] @ torch.tensor([0.0, 0.0, geometry.source_to_isocenter_mm], dtype=torch.float64) + world_from_camera[:3, 3]


@dataclass
class _Level:
    projector: Projector
    fixed: torch.Tensor  # (rows, cols)
    weight: torch.Tensor | None  # (rows, cols): the X-ray's weight on this level


@dataclass
class PoseProblem:
    """Similarity of the X-ray and the DRR at ``theta`` about the initial pose, per detector level.

    Args:
        volume: attenuation volume (1/mm); with ``mask`` a second channel is rendered
            and its projection weights the similarity (pixels the spine projects onto).
        xray: the fixed image ``(rows, cols)`` on ``geometry``'s detector.
        initial_pose: ``camera_from_world`` the search starts from (theta = 0).
        pivot_world: isocentre the rotations turn about (LPS mm).
        step_mm: ray-marching step at full resolution; coarser levels use ``step_mm * factor``
            capped at 3 mm.
        xray_weight: optional ``(rows, cols)`` weight in [0, 1] of the X-ray's pixels (0 where the
            CT cannot explain the image: outside the field, saturated, metal; see
            :func:`sopi.xray_prep.prepare_xray`); it multiplies every similarity's weights.
    """

    volume: Volume
    xray: torch.Tensor
    geometry: CArmGeometry
    initial_pose: torch.Tensor
    pivot_world: torch.Tensor
    mask: Volume | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    step_mm: float = 1.0
    mask_dilation_px: int = 5
    xray_weight: torch.Tensor | None = None
    _levels: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if tuple(self.xray.shape) != self.geometry.shape:
            raise InputError(f"X-ray shape {tuple(self.xray.shape)} does not match the geometry {self.geometry.shape}")
        self.reference = NominalView(self.initial_pose.to(torch.float64).cpu(), self.pivot_world.to(torch.float64).cpu(), "initial")
        # one voxel tensor for every level: the CT, and the mask as a second channel
        self._channels = self.volume if self.mask is None else self.volume.with_data(
            torch.stack([self.volume.data, self.mask.data.to(self.volume.data)])
        )

    def pose(self, theta: torch.Tensor) -> torch.Tensor:
        """``camera_from_world`` for ``theta`` relative to the initial pose."""
        return self.reference.pose(theta)

    def level(self, factor: int) -> _Level:
        """Projector and fixed image on the detector downsampled by ``factor``."""
        if factor not in self._levels:
            rows, cols = -(-self.geometry.rows // factor), -(-self.geometry.cols // factor)
            step = min(3.0, self.step_mm * factor)
            projector = Projector(self._channels, self.geometry.resized(rows, cols), step_mm=step).to(self.device)
            fixed = resize_image(self.xray.to(torch.float32), (rows, cols)).to(self.device)
            weight = None
            if self.xray_weight is not None:  # a coarse pixel counts only if all its fine pixels do
                weight = -F.adaptive_max_pool2d(-self.xray_weight.to(torch.float32)[None, None], (rows, cols))[0, 0].to(self.device)
            self._levels[factor] = _Level(projector, fixed, weight)
        return self._levels[factor]

    def similarity(self, theta: torch.Tensor, factor: int, measure: str) -> torch.Tensor:
        """``(B,)`` similarities (larger is better) for ``(B, 6)`` theta; differentiable in theta."""
        level = self.level(factor)
        poses = self.pose(theta.reshape(-1, 6).to(torch.float64)).to(self.device)
        rendered = level.projector(poses)
        weights = None
        if self.mask is not None:
            rendered, projected_mask = rendered[:, 0], rendered[:, 1]
            weights = _dilate((projected_mask > 0).to(rendered.dtype), self.mask_dilation_px)
            weights = torch.where(weights.sum(dim=(-2, -1), keepdim=True) > 0, weights, torch.ones_like(weights))
        if level.weight is not None:
            weights = level.weight.expand_as(rendered) if weights is None else weights * level.weight
        fixed = level.fixed.expand_as(rendered)
        return SIMILARITIES[measure](fixed, rendered, weights).to(torch.float64).cpu()


def _dilate(mask: torch.Tensor, radius_px: int) -> torch.Tensor:
    if radius_px <= 0:
        return mask
    size = 2 * radius_px + 1
    return torch.nn.functional.max_pool2d(mask[:, None], size, stride=1, padding=radius_px)[:, 0]
