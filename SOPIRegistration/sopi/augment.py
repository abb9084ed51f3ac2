"""What real X-rays have and DRRs lack, applied to simulated images (seeded).

* bone-to-soft-tissue contrast: bone attenuation scaled by ``1 + gain * s(HU)`` with
  ``s`` a logistic step at 250 HU (50 HU wide), ``gain`` drawn in ``[-0.3, 0.5]``;
* detector physics: line integrals ``p`` become photon counts ``I0 exp(-p)`` with
  ``I0`` log-uniform in ``[3e3, 3e4]`` per pixel, Poisson noise, a Gaussian blur of
  ``sigma`` in ``[0.4, 1.2]`` px, and back to ``-log(I / I0)``;
* intensity non-linearity: ``p -> p_max * (p / p_max) ** gamma``, ``gamma`` in ``[0.8, 1.25]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .preprocess import hu_to_attenuation

__all__ = ["bone_contrast_attenuation", "detector_effects", "draw_realism"]


def draw_realism(generator: torch.Generator) -> dict[str, float]:
    """One random draw of the realism parameters."""
    uniform = lambda low, high: low + (high - low) * float(torch.rand(1, generator=generator, dtype=torch.float64))  # noqa: E731
    return {
        "bone_gain": uniform(-0.3, 0.5),
        "photons": math.exp(uniform(math.log(3e3), math.log(3e4))),
        "blur_px": uniform(0.4, 1.2),
        "gamma": uniform(0.8, 1.25),
    }


def bone_contrast_attenuation(hu: torch.Tensor, bone_gain: float) -> torch.Tensor:
    """Attenuation (1/mm) with bone contrast changed by ``bone_gain`` relative to soft tissue."""
    bone = torch.sigmoid((hu.to(torch.float32) - 250.0) / 50.0)
    return hu_to_attenuation(hu.to(torch.float32)) * (1.0 + bone_gain * bone)


def detector_effects(line_integrals: torch.Tensor, draw: dict[str, float], generator: torch.Generator) -> torch.Tensor:
    """Noise, blur and non-linearity applied to a ``(rows, cols)`` DRR (returns float32 line integrals)."""
    photons = draw["photons"]
    counts = torch.poisson(photons * torch.exp(-line_integrals.to(torch.float64)), generator=generator)
    sigma = draw["blur_px"]
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-offsets.square() / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    blurred = F.pad(counts[None, None], (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(F.conv2d(blurred, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))[0, 0]
    integrals = -torch.log(blurred.clamp(min=0.5) / photons)
    peak = float(integrals.max().clamp(min=1e-6))
    return (peak * (integrals.clamp(min=0) / peak) ** draw["gamma"]).to(torch.float32)
