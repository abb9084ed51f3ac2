"""Scatter as a detector reads it out: the DRR's line integrals with a smooth scatter field added to the primary."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..filters import gaussian_blur

__all__ = ["read_out", "scatter_field", "with_scatter"]


def scatter_field(line_integrals: torch.Tensor, scatter_to_primary: float, sigma_px: float, exposed: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, H, W)`` scatter ``S`` (in units of the unattenuated beam) of the line integrals ``p``:
    a Gaussian (``sigma_px``) of the primary ``P = exp(-p)`` scaled so that its mean is ``scatter_to_primary``
    times ``P``'s. With ``exposed`` (``(H, W)`` in [0, 1], where the beam reached the detector) only the exposed
    primary scatters and both means are taken over the exposed pixels. Scatter is smooth, so ``S`` is computed
    on a grid binned by 4 and interpolated back."""
    primary = torch.exp(-line_integrals)
    source = primary if exposed is None else primary * exposed
    binned = F.avg_pool2d(source[:, None], 4, ceil_mode=True)[:, 0]
    blurred = gaussian_blur(binned, max(sigma_px / 4, 0.5))
    scatter = F.interpolate(blurred[:, None], size=primary.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    if exposed is None or float(exposed.sum()) < 1.0:
        mean_primary, mean_scatter = primary.mean(dim=(-2, -1), keepdim=True), scatter.mean(dim=(-2, -1), keepdim=True)
    else:
        total = exposed.sum()
        mean_primary = (primary * exposed).sum(dim=(-2, -1), keepdim=True) / total
        mean_scatter = (scatter * exposed).sum(dim=(-2, -1), keepdim=True) / total
    return scatter_to_primary * mean_primary / mean_scatter.clamp(min=1e-12) * scatter


def read_out(line_integrals: torch.Tensor, scatter: torch.Tensor) -> torch.Tensor:
    """Line integrals ``p`` read out with the scatter ``S`` added to the primary: ``-log(exp(-p) + S)``."""
    return -torch.log(torch.exp(-line_integrals) + scatter)


def with_scatter(line_integrals: torch.Tensor, scatter_to_primary: float, sigma_px: float, exposed: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, H, W)`` line integrals read out (:func:`read_out`) with their own :func:`scatter_field`
    (differentiable through both)."""
    return read_out(line_integrals, scatter_field(line_integrals, scatter_to_primary, sigma_px, exposed))
