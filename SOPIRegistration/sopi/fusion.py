"""The picture a clinician checks: the DRR at the registered pose fused over the X-ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .similarity import image_gradients

__all__ = ["fused_overlay", "write_fused_png"]


def _normalised(image: torch.Tensor) -> np.ndarray:
    array = image.detach().to(torch.float64).cpu().numpy()
    low, high = np.percentile(array, [1.0, 99.5])
    return np.clip((array - low) / max(high - low, 1e-12), 0.0, 1.0)


def fused_overlay(xray: torch.Tensor, drr: torch.Tensor, opacity: float = 0.5, edge_quantile: float = 0.9) -> np.ndarray:
    """``(rows, cols, 3)`` uint8: the X-ray in grey, the DRR blended in orange, the DRR's edges in green.

    Both images are windowed to their 1st-99.5th percentiles; edges are the DRR
    pixels whose Sobel gradient magnitude is above its ``edge_quantile`` quantile.
    """
    if tuple(xray.shape) != tuple(drr.shape):
        raise ValueError(f"fused_overlay: X-ray {tuple(xray.shape)} and DRR {tuple(drr.shape)} differ in shape")
    grey, moving = _normalised(xray), _normalised(drr)
    orange = np.array([1.0, 0.55, 0.1])
    rgb = (1 - opacity) * grey[..., None] + opacity * moving[..., None] * orange
    rgb = np.clip(rgb, 0.0, 1.0)
    gx, gy = image_gradients(drr.detach().to(torch.float64).cpu()[None])
    magnitude = torch.sqrt(gx.square() + gy.square())[0].numpy()
    edges = magnitude > np.quantile(magnitude, edge_quantile)
    rgb[edges] = 0.35 * rgb[edges] + 0.65 * np.array([0.1, 1.0, 0.3])
    return np.round(rgb * 255).astype(np.uint8)


def write_fused_png(path: str | Path, xray: torch.Tensor, drr: torch.Tensor, opacity: float = 0.5) -> None:
    """Write :func:`fused_overlay` as an RGB PNG (atomically)."""
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(fused_overlay(xray, drr, opacity)).save(temporary, format="PNG")
