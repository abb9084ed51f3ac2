"""Differentiable cone-beam DRR by trilinear ray marching (the ProST design).

For every detector pixel the ray from the X-ray source to the pixel centre is
clipped to the support of the volume's interpolant (the box one voxel beyond the
outermost non-zero voxels, where trilinear interpolation with zero padding
vanishes). ``N`` samples are placed at the midpoints of ``N`` equal segments of
that chord, the volume is sampled trilinearly there, and the pixel value is

    I(pixel) = sum_k V(x_k) * chord_mm / N    (a line integral, value x mm)

with ``N = ceil(longest chord / step_mm)`` over the batch (so each ray's step is at
most ``step_mm``) unless ``n_samples`` fixes it. Everything is batched torch, so
it runs on CPU and CUDA and is differentiable with respect to the pose (and the
volume).

Memory stays bounded: rays are processed in chunks of at most
``max_samples_per_chunk`` samples, and when gradients are needed for a render
larger than ``checkpoint_above_samples`` the chunks are checkpointed (recomputed
in the backward pass) instead of keeping every sample position alive.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .errors import InputError
from .geometry import CArmGeometry
from .volume import Volume

__all__ = ["Projector"]


class Projector(nn.Module):
    """Render DRRs of a volume for batches of ``camera_from_world`` poses.

    Args:
        volume: voxels to integrate (already in attenuation units, or a mask);
            ``(K, J, I)`` gives images ``(B, rows, cols)``, ``(C, K, J, I)`` gives
            ``(B, C, rows, cols)`` (for example CT and mask in one pass).
        geometry: the detector.
        step_mm: largest distance between samples along a ray (mm).
        n_samples: fixed number of samples per ray (overrides ``step_mm``).
        dtype: floating type of the rendering (float32 by default).
        max_samples_per_chunk: bound on samples held at once per chunk.
        checkpoint_above_samples: with gradients enabled, checkpoint chunks when a
            render has more samples than this.
    """

    def __init__(
        self,
        volume: Volume,
        geometry: CArmGeometry,
        step_mm: float = 1.0,
        n_samples: int | None = None,
        dtype: torch.dtype = torch.float32,
        max_samples_per_chunk: int = 1 << 22,
        checkpoint_above_samples: int = 1 << 25,
    ) -> None:
        super().__init__()
        if not step_mm > 0:
            raise InputError(f"projector: step_mm must be positive, got {step_mm!r}")
        if n_samples is not None and n_samples < 1:
            raise InputError(f"projector: n_samples must be >= 1, got {n_samples!r}")
        self.geometry = geometry
        self.step_mm = float(step_mm)
        self.n_samples = n_samples
        self.max_samples_per_chunk = int(max_samples_per_chunk)
        self.checkpoint_above_samples = int(checkpoint_above_samples)
        self.single_channel = volume.data.ndim == 3
        data = volume.data[None] if self.single_channel else volume.data
        data = data.to(dtype)
        if not torch.isfinite(data).all():
            raise InputError("projector: the volume holds NaN or infinite voxels")
        self.register_buffer("volume", data[None].contiguous(), persistent=False)  # (1, C, K, J, I)

        grid_size = torch.tensor(volume.grid_shape, dtype=torch.float64)  # (I, J, K)
        # grid_sample's normalised coordinates (align_corners=False): x_n = (2 i + 1) / I - 1.
        normalized_from_index = torch.eye(4, dtype=torch.float64)
        normalized_from_index[:3, :3] = torch.diag(2.0 / grid_size)
        normalized_from_index[:3, 3] = 1.0 / grid_size - 1.0
        self.register_buffer(
            "normalized_from_world", (normalized_from_index @ volume.index_from_world).to(dtype), persistent=False
        )
        low, high = _support_box_index(data)
        self.register_buffer("box_low", ((2.0 * low + 1.0) / grid_size - 1.0).to(dtype), persistent=False)
        self.register_buffer("box_high", ((2.0 * high + 1.0) / grid_size - 1.0).to(dtype), persistent=False)
        detector_points, ray_length_mm = _detector_points_camera(geometry)
        self.register_buffer("detector_points", detector_points.to(dtype), persistent=False)  # (P, 3)
        self.register_buffer("ray_length_mm", ray_length_mm.to(dtype), persistent=False)  # (P,)

    def extra_repr(self) -> str:
        return f"detector={self.geometry.rows}x{self.geometry.cols}, step_mm={self.step_mm}, n_samples={self.n_samples}"

    def resized(self, rows: int, cols: int) -> Projector:
        """A projector of the same volume on a detector resampled to ``rows x cols``."""
        other = copy.copy(self)
        other._buffers = dict(self._buffers)  # shallow copy shares the volume, not the detector
        other.geometry = self.geometry.resized(rows, cols)
        points, lengths = _detector_points_camera(other.geometry)
        other.detector_points = points.to(self.detector_points)
        other.ray_length_mm = lengths.to(self.ray_length_mm)
        return other

    def forward(self, camera_from_world: torch.Tensor) -> torch.Tensor:
        """Render ``(B, 4, 4)`` (or ``(4, 4)``) poses to ``(B, rows, cols)`` images.

        Multi-channel volumes give ``(B, C, rows, cols)``. Pixel values are line
        integrals of the voxel values along each source-to-pixel ray (value x mm).
        """
        if camera_from_world.shape[-2:] != (4, 4):
            raise InputError(f"projector: poses must be (B, 4, 4), got {tuple(camera_from_world.shape)}")
        squeeze = camera_from_world.ndim == 2
        poses = camera_from_world.reshape(-1, 4, 4).to(device=self.volume.device, dtype=self.volume.dtype)
        batch = poses.shape[0]
        origin, direction = self._rays_normalized(poses)  # (B, 3), (B, P, 3)
        near, far = self._clip(origin, direction)  # (B, P)
        chord_mm = (far - near) * self.ray_length_mm
        n_samples = self.n_samples or max(1, math.ceil(float(chord_mm.max()) / self.step_mm))

        rays = direction.shape[1]
        origin = origin[:, None, :].expand(-1, rays, -1).reshape(-1, 3)
        direction, near, far, chord_mm = direction.reshape(-1, 3), near.reshape(-1), far.reshape(-1), chord_mm.reshape(-1)
        total_rays = origin.shape[0]
        rays_per_chunk = max(1, self.max_samples_per_chunk // n_samples)
        use_checkpoint = torch.is_grad_enabled() and (
            poses.requires_grad or self.volume.requires_grad
        ) and total_rays * n_samples > self.checkpoint_above_samples
        pieces = []
        for start in range(0, total_rays, rays_per_chunk):
            chunk = slice(start, start + rays_per_chunk)
            args = (origin[chunk], direction[chunk], near[chunk], far[chunk], chord_mm[chunk], n_samples)
            if use_checkpoint:
                pieces.append(checkpoint(self._integrate, *args, use_reentrant=False))
            else:
                pieces.append(self._integrate(*args))
        channels = self.volume.shape[1]
        images = torch.cat(pieces, dim=0).reshape(batch, self.geometry.rows, self.geometry.cols, channels)
        images = images.permute(0, 3, 1, 2)
        if self.single_channel:
            images = images[:, 0]
        return images[0] if squeeze else images

    # ------------------------------------------------------------------ internals

    def _rays_normalized(self, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Source position ``(B, 3)`` and source-to-pixel vectors ``(B, P, 3)`` in normalised grid coordinates."""
        rotation_t = poses[:, :3, :3].transpose(1, 2)
        source_world = -(rotation_t @ poses[:, :3, 3:4])[..., 0]  # (B, 3)
        normalized_linear = self.normalized_from_world[:3, :3]
        origin = source_world @ normalized_linear.T + self.normalized_from_world[:3, 3]
        # A detector point p (camera frame) sits at world R^T (p - t) = R^T p + source.
        direction = self.detector_points @ (normalized_linear @ rotation_t).transpose(1, 2)
        return origin, direction

    def _clip(self, origin: torch.Tensor, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray parameters ``[near, far]`` (0 = source, 1 = pixel) inside the support box (slab method)."""
        inverse = 1.0 / torch.where(direction == 0, torch.full_like(direction, 1e-12), direction)
        to_low = (self.box_low - origin[:, None, :]) * inverse
        to_high = (self.box_high - origin[:, None, :]) * inverse
        near = torch.minimum(to_low, to_high).amax(dim=-1).clamp(min=0.0, max=1.0)
        far = torch.maximum(to_low, to_high).amin(dim=-1).clamp(min=0.0, max=1.0)
        return near, torch.maximum(far, near)

    def _integrate(
        self,
        origin: torch.Tensor,
        direction: torch.Tensor,
        near: torch.Tensor,
        far: torch.Tensor,
        chord_mm: torch.Tensor,
        n_samples: int,
    ) -> torch.Tensor:
        """Midpoint-rule line integrals ``(R, C)`` for ``R`` rays."""
        fractions = (torch.arange(n_samples, device=origin.device, dtype=origin.dtype) + 0.5) / n_samples
        lam = torch.addcmul(near[:, None], (far - near)[:, None], fractions)  # (R, N)
        rays = lam.shape[0]
        splits = _batch_splits(rays, lam.device)
        padded = -(-rays // splits) * splits
        if padded != rays:  # pad with rays far outside the grid (zero after sampling)
            extra = padded - rays
            origin = torch.cat([origin, origin.new_full((extra, 3), 4.0)])
            direction = torch.cat([direction, direction.new_zeros(extra, 3)])
            lam = torch.cat([lam, lam.new_zeros(extra, n_samples)])
        samples = _RaySamples.apply(origin, direction, lam)  # (R, N, 3)
        grid = samples.reshape(splits, padded // splits, n_samples, 1, 3)
        volume = self.volume.expand(splits, -1, -1, -1, -1)
        values = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sums = values.sum(dim=(3, 4))  # (splits, C, padded / splits)
        sums = sums.permute(0, 2, 1).reshape(padded, -1)[:rays]
        return sums * (chord_mm / n_samples)[:, None]


class _RaySamples(torch.autograd.Function):
    """``origin + lam * direction`` for ``(R, 3)`` rays at ``(R, N)`` ray parameters.

    One fused pass forward; backward reduces over samples with batched matrix
    products instead of autograd's broadcast multiply-and-sum passes.
    """

    @staticmethod
    def forward(ctx, origin: torch.Tensor, direction: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(direction, lam)
        return torch.addcmul(origin[:, None, :], lam[..., None], direction[:, None, :])

    @staticmethod
    def backward(ctx, grad_samples: torch.Tensor):
        direction, lam = ctx.saved_tensors
        grad_origin = grad_samples.sum(dim=1) if ctx.needs_input_grad[0] else None
        grad_direction = torch.bmm(lam[:, None, :], grad_samples)[:, 0] if ctx.needs_input_grad[1] else None
        grad_lam = torch.bmm(grad_samples, direction[:, :, None])[..., 0] if ctx.needs_input_grad[2] else None
        return grad_origin, grad_direction, grad_lam


def _batch_splits(rays: int, device: torch.device) -> int:
    """How many grid_sample batch entries to split ``rays`` into.

    PyTorch's CPU 3D grid sampler parallelises over the batch dimension only, so
    rays are spread over a few entries per thread; CUDA parallelises over all points.
    """
    if device.type != "cpu":
        return 1
    return max(1, min(rays, 4 * torch.get_num_threads()))


def _support_box_index(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index-space box ``[low, high]`` (I, J, K order) outside which the interpolant is zero."""
    occupied = (data != 0).any(dim=0)  # (K, J, I)
    if not occupied.any():  # nothing to integrate: an empty box
        return torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    lows, highs = [], []
    for axis in (2, 1, 0):  # i, j, k
        other = tuple(a for a in range(3) if a != axis)
        present = torch.nonzero(occupied.any(dim=other)).flatten()
        lows.append(float(present.min()) - 1.0)
        highs.append(float(present.max()) + 1.0)
    return torch.tensor(lows, dtype=torch.float64), torch.tensor(highs, dtype=torch.float64)


def _detector_points_camera(geometry: CArmGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres ``(rows * cols, 3)`` in the camera frame (row-major) and their distance to the source (mm)."""
    du, dv = geometry.pixel_spacing_mm
    cu, cv = geometry.principal_point_px
    rows = torch.arange(geometry.rows, dtype=torch.float64)
    cols = torch.arange(geometry.cols, dtype=torch.float64)
    row_grid, col_grid = torch.meshgrid(rows, cols, indexing="ij")
    points = torch.stack(
        [(col_grid - cu) * du, (row_grid - cv) * dv, torch.full_like(col_grid, geometry.sdd_mm)], dim=-1
    ).reshape(-1, 3)
    return points, points.norm(dim=-1)
