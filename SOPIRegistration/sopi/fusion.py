"""The picture a clinician checks: the DRR at the registered pose fused over the X-ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .similarity import image_gradients

__all__ = ["checkerboard", "edge_overlay", "fused_overlay", "overlay_pair", "side_by_side", "write_fused_png", "write_fused_views_png"]


def _normalised(image: torch.Tensor) -> np.ndarray:
    array = image.detach().to(torch.float64).cpu().numpy()
    low, high = np.percentile(array, [1.0, 99.5])
    return np.clip((array - low) / max(high - low, 1e-12), 0.0, 1.0)


def _check_shapes(xray: torch.Tensor, drr: torch.Tensor, what: str) -> None:
    if tuple(xray.shape) != tuple(drr.shape):
        raise ValueError(f"{what}: X-ray {tuple(xray.shape)} and DRR {tuple(drr.shape)} differ in shape")


def _edges(drr: torch.Tensor, edge_quantile: float) -> np.ndarray:
    gx, gy = image_gradients(drr.detach().to(torch.float64).cpu()[None])
    magnitude = torch.sqrt(gx.square() + gy.square())[0].numpy()
    return magnitude > np.quantile(magnitude, edge_quantile)


def checkerboard(xray: torch.Tensor, drr: torch.Tensor, tile_px: int = 32) -> np.ndarray:
    """``(rows, cols)`` float32 in [0, 1]: windowed X-ray and DRR in alternating square tiles
    (the X-ray in the tile holding pixel (0, 0))."""
    _check_shapes(xray, drr, "checkerboard")
    if tile_px < 1:
        raise ValueError(f"checkerboard: tile_px must be a positive integer, got {tile_px}")
    rows, cols = (np.arange(n) // tile_px for n in xray.shape)
    use_drr = (rows[:, None] + cols[None, :]) % 2 == 1
    return np.where(use_drr, _normalised(drr), _normalised(xray)).astype(np.float32)


def edge_overlay(xray: torch.Tensor, drr: torch.Tensor, edge_quantile: float = 0.9) -> np.ndarray:
    """``(rows, cols)`` float32 in [0, 1]: the windowed X-ray, dimmed to 0.8, with the DRR's
    edges (Sobel magnitude above its ``edge_quantile`` quantile) drawn at 1."""
    _check_shapes(xray, drr, "edge_overlay")
    grey = 0.8 * _normalised(xray)
    grey[_edges(drr, edge_quantile)] = 1.0
    return grey.astype(np.float32)


def fused_overlay(xray: torch.Tensor, drr: torch.Tensor, opacity: float = 0.5, edge_quantile: float = 0.9) -> np.ndarray:
    """``(rows, cols, 3)`` uint8: the X-ray in grey, the DRR blended in orange, the DRR's edges in green.

    Both images are windowed to their 1st-99.5th percentiles; edges are the DRR
    pixels whose Sobel gradient magnitude is above its ``edge_quantile`` quantile.
    """
    _check_shapes(xray, drr, "fused_overlay")
    grey, moving = _normalised(xray), _normalised(drr)
    orange = np.array([1.0, 0.55, 0.1])
    rgb = (1 - opacity) * grey[..., None] + opacity * moving[..., None] * orange
    rgb = np.clip(rgb, 0.0, 1.0)
    edges = _edges(drr, edge_quantile)
    rgb[edges] = 0.35 * rgb[edges] + 0.65 * np.array([0.1, 1.0, 0.3])
    return np.round(rgb * 255).astype(np.uint8)


def overlay_pair(volume, xray, camera_from_world: torch.Tensor, orientation: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X-ray, DRR)`` on the same pixels for an overlay: the X-ray as stored, binned as registration bins it
    (:func:`sopi.io_xray.working_xray`: a 2560-pixel radiograph's full-size DRR took 40 s and 6 GB), and the
    DRR of the rendering ``volume`` at ``camera_from_world``. The pose is for the image turned as the result's
    ``orientation`` record says, so the DRR is rendered on the turned detector and turned back."""
    from .io_xray import working_xray
    from .render import render_drr
    from .xray_orientation import Orientation

    shown, _ = working_xray(xray)
    turned = Orientation.from_record(orientation)
    drr = render_drr(volume, turned.geometry(shown.geometry), camera_from_world, device=device)
    return shown.image, turned.undo(drr)


def write_fused_png(path: str | Path, xray: torch.Tensor, drr: torch.Tensor, opacity: float = 0.5) -> None:
    """Write :func:`fused_overlay` as an RGB PNG (atomically)."""
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(fused_overlay(xray, drr, opacity)).save(temporary, format="PNG")


def side_by_side(pictures: list[np.ndarray], gap_px: int = 4) -> np.ndarray:
    """``(rows, cols, 3)`` uint8: RGB pictures left to right, top-aligned, ``gap_px`` black columns between."""
    rows = max(picture.shape[0] for picture in pictures)
    padded = []
    for index, picture in enumerate(pictures):
        if index:
            padded.append(np.zeros((rows, gap_px, 3), dtype=np.uint8))
        padded.append(np.pad(picture, ((0, rows - picture.shape[0]), (0, 0), (0, 0))))
    return np.concatenate(padded, axis=1)


def write_fused_views_png(path: str | Path, pairs: list[tuple[torch.Tensor, torch.Tensor]], opacity: float = 0.5) -> None:
    """Write every view's :func:`fused_overlay` (``(xray, drr)`` pairs, view 0 leftmost) side by side as one PNG."""
    from PIL import Image

    picture = side_by_side([fused_overlay(xray, drr, opacity) for xray, drr in pairs])
    with atomic_path(path) as temporary:
        Image.fromarray(picture).save(temporary, format="PNG")
