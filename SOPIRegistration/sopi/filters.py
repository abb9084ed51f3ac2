"""Small image filters shared by the similarities, the X-ray simulation and its preparation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["dilate", "gaussian_blur", "sample_across_lines"]


def gaussian_blur(image: torch.Tensor, sigma_px: float, mode: str = "replicate") -> torch.Tensor:
    """Separable Gaussian blur (sigma in pixels) of ``(H, W)`` or ``(B, H, W)`` images.

    ``mode`` is the padding (``replicate`` or ``reflect``); the kernel is cut at three sigma
    and at the image's size. A sigma under 0.05 pixels returns the image unchanged.
    """
    if sigma_px <= 0.05:
        return image
    single = image.ndim == 2
    batch = image[None] if single else image
    radius = min(max(1, math.ceil(3 * sigma_px)), min(batch.shape[-2:]) - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=batch.dtype, device=batch.device)
    kernel = torch.exp(-offsets.square() / (2 * sigma_px**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(batch[:, None], (radius, radius, radius, radius), mode=mode)
    blurred = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))[:, 0]
    return blurred[0] if single else blurred


def dilate(mask: torch.Tensor, radius_px: int) -> torch.Tensor:
    """Bool ``(H, W)`` or ``(B, H, W)``: ``mask`` (non-zero = set) grown by a square of ``radius_px``."""
    if radius_px <= 0:
        return mask != 0
    single = mask.ndim == 2
    batch = (mask[None] if single else mask).to(torch.float32)
    size = 2 * radius_px + 1  # a square is a row then a column: two 1D passes, not one 2D window
    rows = F.max_pool2d(batch[:, None], (1, size), stride=1, padding=(0, radius_px))
    grown = F.max_pool2d(rows, (size, 1), stride=1, padding=(radius_px, 0))[:, 0] > 0.5
    return grown[0] if single else grown


def sample_across_lines(image: torch.Tensor, usable: torch.Tensor, phi: torch.Tensor, along: torch.Tensor,
                        normal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(intensity, valid)``, each ``(len(phi), len(along), len(normal))``: ``image`` (``(rows, cols)``) read
    bilinearly at the points ``normal`` pixels along each normal angle ``phi`` (radians) and ``along`` pixels
    along its line, both from the image centre; ``valid`` where every neighbour read is ``usable`` (and inside
    the image)."""
    rows, cols = image.shape
    cos, sin = torch.cos(phi)[:, None, None], torch.sin(phi)[:, None, None]
    xs = normal[None, None, :] * cos - along[None, :, None] * sin + (cols - 1) / 2
    ys = normal[None, None, :] * sin + along[None, :, None] * cos + (rows - 1) / 2
    grid = torch.stack([(2 * xs + 1) / cols - 1, (2 * ys + 1) / rows - 1], dim=-1)  # (angles, along, normal, 2)
    stacked = torch.stack([image.to(torch.float32), usable.to(torch.float32)])[None].expand(len(phi), -1, -1, -1)
    sampled = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled[:, 0], sampled[:, 1] > 0.99
