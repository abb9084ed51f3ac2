#!/usr/bin/env python3
"""Prototypes for a faster ``sopi.drr.Projector`` (benchmark material, not engine code).

``PlaneSweepProjector`` renders the same trilinear line integral as ``Projector``
but places the ``N`` samples of every ray on ``N`` shared planes perpendicular
to the volume axis most aligned with the rays (Joseph-style plane sweep), instead
of at ``N`` points spread along each ray's own chord:

* a trilinear sample on plane ``z_s`` (between slices ``k0`` and ``k0 + 1`` with
  weight ``f``) is a *bilinear* sample of the blended slice
  ``S_s = (1 - f) V[k0] + f V[k0 + 1]``; the ``N`` blended slices do not depend on
  the pose and are cached (4 MB per 256 planes of a 128^2 slice);
* so a render is one 2D ``grid_sample`` with the planes as the batch: PyTorch's
  2D CPU sampler is vectorised (AVX2/AVX-512) and parallel over planes, while the
  3D CPU sampler is scalar and parallel over the batch only;
* the in-plane coordinates are affine in the plane position, ``u = o_u + (z_s - o_a) d_u / d_a``,
  two broadcast multiply-adds over ``(N, rays)`` instead of ``(rays, N, 3)`` points;
* the weight of every sample of a ray is its step length, ``ray_length_mm * dz / |d_a|``.

It is differentiable in the pose (through the in-plane coordinates and the step
weights) and in the volume (through the blended slices, rebuilt, not cached, when
the volume requires grad). Memory is bounded by processing planes in chunks
(checkpointed when gradients are needed).

``ChunkFixProjector`` is the current ``Projector`` with two small changes:
``torch.split`` instead of per-chunk slicing (autograd's per-slice backward zero-fills
and accumulates a full-size gradient per chunk: quadratic in the number of chunks)
and a smaller default chunk (2^20 samples).

Run ``python benchmarks/projector_prototypes.py`` for agreement and timings.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "SOPIRegistration") not in sys.path:
    sys.path.insert(0, str(REPO / "SOPIRegistration"))

from sopi.drr import Projector  # noqa: E402
from sopi.geometry import CArmGeometry  # noqa: E402
from sopi.volume import Volume  # noqa: E402

# (volume tensor dim of the axis in (C, K, J, I), the two in-plane grid axes as (W, H))
_AXES = {0: (3, (1, 2)), 1: (2, (0, 2)), 2: (1, (0, 1))}


class PlaneSweepProjector(nn.Module):
    """Same interface and output as ``Projector``; samples on planes shared by all rays."""

    def __init__(
        self,
        volume: Volume,
        geometry: CArmGeometry,
        step_mm: float = 1.0,
        n_samples: int | None = None,
        max_samples_per_chunk: int = 1 << 20,
        checkpoint_above_samples: int = 1 << 25,
    ) -> None:
        super().__init__()
        self.base = Projector(volume, geometry, step_mm=step_mm, n_samples=n_samples)  # buffers, rays, clip
        self.geometry = geometry
        self.step_mm = float(step_mm)
        self.n_samples = n_samples
        self.max_samples_per_chunk = int(max_samples_per_chunk)
        self.checkpoint_above_samples = int(checkpoint_above_samples)
        self._cache: dict = {}

    @property
    def volume(self) -> torch.Tensor:
        return self.base.volume

    def _planes(self, axis: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Blended slices ``(n, C, H, W)`` and plane positions ``(n,)`` (normalised) along ``axis``."""
        key = (axis, n, self.volume.device, self.volume.dtype)
        if key in self._cache and not self.volume.requires_grad:
            return self._cache[key]
        dim, _ = _AXES[axis]
        data = self.volume[0]  # (C, K, J, I)
        size = data.shape[dim]
        low, high = float(self.base.box_low[axis]), float(self.base.box_high[axis])
        positions = low + (torch.arange(n, dtype=torch.float64) + 0.5) * (high - low) / n
        index = ((positions + 1.0) * size - 1.0) / 2.0  # align_corners=False
        lower = torch.floor(index)
        frac = (index - lower).to(data)
        stack = data.movedim(dim, 0)  # (size, C, a, b)
        stack = F.pad(stack, (0, 0, 0, 0, 0, 0, 1, 1))  # zero slice on each side
        lower = lower.long() + 1
        lower = lower.clamp(0, size + 1)
        upper = (lower + 1).clamp(0, size + 1)
        f = frac.to(stack.device)[:, None, None, None]
        slices = torch.lerp(stack[lower.to(stack.device)], stack[upper.to(stack.device)], f)
        # slices are (n, C, a, b) with a, b the remaining volume dims in (K, J, I) order: H = a, W = b
        result = (slices.contiguous(), positions.to(data))
        if not self.volume.requires_grad:
            self._cache[key] = result
        return result

    def forward(self, camera_from_world: torch.Tensor) -> torch.Tensor:
        squeeze = camera_from_world.ndim == 2
        poses = camera_from_world.reshape(-1, 4, 4).to(device=self.volume.device, dtype=self.volume.dtype)
        origin, direction = self.base._rays_normalized(poses)  # (B, 3), (B, P, 3)
        batch, rays = direction.shape[:2]
        # axis: the one where the most oblique ray is steepest, chosen per pose
        with torch.no_grad():
            steep = (direction.abs() / direction.norm(dim=-1, keepdim=True)).amin(dim=1)  # (B, 3)
            axes = steep.argmax(dim=1).tolist()
            near, far = self.base._clip(origin, direction)
            chord = (far - near) * self.base.ray_length_mm
        channels = self.volume.shape[1]
        out = [None] * batch
        for axis in sorted(set(axes)):
            members = [b for b in range(batch) if axes[b] == axis]
            idx = torch.tensor(members, device=poses.device)
            sub_near, sub_far = near[idx], far[idx]
            if self.n_samples:
                n = self.n_samples
            else:  # enough planes that every ray's step between planes is <= step_mm
                span = float(self.base.box_high[axis] - self.base.box_low[axis])
                mm_per_t = self.base.ray_length_mm / direction[idx][..., axis].abs().clamp_min(1e-12)
                n = max(1, math.ceil(span * float(mm_per_t.max()) / self.step_mm))
            images = self._render_axis(origin[idx], direction[idx], axis, n, sub_near, sub_far)  # (b, C, P)
            for j, b in enumerate(members):
                out[b] = images[j]
        images = torch.stack(out).reshape(batch, channels, self.geometry.rows, self.geometry.cols)
        if self.base.single_channel:
            images = images[:, 0]
        return images[0] if squeeze else images

    def _render_axis(self, origin, direction, axis, n, near, far) -> torch.Tensor:
        slices, positions = self._planes(axis, n)
        _, (w_axis, h_axis) = _AXES[axis]
        batch, rays = direction.shape[:2]
        d_axis = direction[..., axis]  # (b, P)
        safe = torch.where(d_axis.abs() < 1e-12, torch.full_like(d_axis, 1e-12), d_axis)
        slope = direction[..., [w_axis, h_axis]] / safe[..., None]  # (b, P, 2): d(u, v)/d(z)
        intercept = origin[:, None, [w_axis, h_axis]] - origin[:, None, axis, None] * slope  # (u, v) at z = 0
        dz = float(self.base.box_high[axis] - self.base.box_low[axis]) / n
        weight = self.base.ray_length_mm * (dz / safe.abs())  # (b, P) mm per sample
        # Planes behind the source or beyond the detector must not count; they lie outside the
        # support box (hence sample zero) unless the source or detector is inside it.
        guard = bool(((near <= 0) | (far >= 1)).logical_and(far > near).any())
        planes_per_chunk = max(1, self.max_samples_per_chunk // (batch * rays))
        use_checkpoint = torch.is_grad_enabled() and (
            origin.requires_grad or direction.requires_grad or self.volume.requires_grad
        ) and n * batch * rays > self.checkpoint_above_samples
        total = None
        for start in range(0, n, planes_per_chunk):
            stop = min(n, start + planes_per_chunk)
            args = (slices[start:stop], positions[start:stop], intercept, slope, origin[:, axis, None], safe, guard)
            part = checkpoint(_sweep, *args, use_reentrant=False) if use_checkpoint else _sweep(*args)
            total = part if total is None else total + part
        return total * weight[:, None, :]  # (b, C, P)


def _sweep(slices, positions, intercept, slope, origin_axis, d_axis, guard: bool):
    """Sum over planes of bilinear samples: ``(b, C, P)``."""
    z = positions[:, None, None, None]  # (n, 1, 1, 1)
    grid = torch.addcmul(intercept[None], z, slope[None])  # (n, b, P, 2)
    values = F.grid_sample(slices, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (n, C, b, P)
    if guard:  # ray parameter of each plane t = (z - o_a) / d_a; keep 0 <= t <= 1
        t = (z[..., 0] - origin_axis[None]) / d_axis[None]
        values = values * ((t >= 0) & (t <= 1)).to(values.dtype)[:, None]
    return values.sum(dim=0).permute(1, 0, 2)  # (b, C, P)


# --------------------------------------------------------------------------- ray-march fix


class ChunkFixProjector(Projector):
    """``Projector`` with ``torch.split`` chunks (linear-time backward) and a configurable chunk."""

    def forward(self, camera_from_world: torch.Tensor) -> torch.Tensor:
        squeeze = camera_from_world.ndim == 2
        poses = camera_from_world.reshape(-1, 4, 4).to(device=self.volume.device, dtype=self.volume.dtype)
        batch = poses.shape[0]
        origin, direction = self._rays_normalized(poses)
        near, far = self._clip(origin, direction)
        chord_mm = (far - near) * self.ray_length_mm
        n_samples = self.n_samples or max(1, math.ceil(float(chord_mm.detach().max()) / self.step_mm))
        rays = direction.shape[1]
        origin = origin[:, None, :].expand(-1, rays, -1).reshape(-1, 3)
        direction, near, far, chord_mm = direction.reshape(-1, 3), near.reshape(-1), far.reshape(-1), chord_mm.reshape(-1)
        total_rays = origin.shape[0]
        rays_per_chunk = max(1, self.max_samples_per_chunk // n_samples)
        use_checkpoint = torch.is_grad_enabled() and (
            poses.requires_grad or self.volume.requires_grad
        ) and total_rays * n_samples > self.checkpoint_above_samples
        pieces = []
        splits = [t.split(rays_per_chunk) for t in (origin, direction, near, far, chord_mm)]
        for args in zip(*splits):
            if use_checkpoint:
                pieces.append(checkpoint(self._integrate, *args, n_samples, use_reentrant=False))
            else:
                pieces.append(self._integrate(*args, n_samples))
        channels = self.volume.shape[1]
        images = torch.cat(pieces, dim=0).reshape(batch, self.geometry.rows, self.geometry.cols, channels)
        images = images.permute(0, 3, 1, 2)
        if self.single_channel:
            images = images[:, 0]
        return images[0] if squeeze else images
