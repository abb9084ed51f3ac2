"""What real X-rays have and DRRs lack, applied to simulated images (seeded).

* bone-to-soft-tissue contrast: bone attenuation scaled by ``1 + gain * s(HU)`` with
  ``s`` a logistic step at 250 HU (50 HU wide), ``gain`` drawn in ``[-0.3, 0.5]``;
* detector physics: line integrals ``p`` become photon counts ``I0 exp(-p)``, Poisson noise,
  a Gaussian blur of ``sigma`` in ``[0.4, 1.2]`` px, and back to ``-log(I / I0)``. ``I0`` is
  set so that ``photons`` quanta per pixel reach the detector behind the patient, at the
  median fluence of the image's central half (automatic exposure control, as
  :func:`sopi.xray_physics.exposure_reference`), ``photons`` log-uniform in the simulator's
  range (:data:`sopi.xray_physics.RANGES`, 300-8000);
* intensity non-linearity: ``p -> p_max * (p / p_max) ** gamma``, ``gamma`` in ``[0.8, 1.25]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .preprocess import hu_to_attenuation
from .xray_physics import RANGES, exposure_reference

__all__ = ["bone_contrast_attenuation", "detector_effects", "detector_effects_batch", "draw_realism"]


def draw_realism(generator: torch.Generator) -> dict[str, float]:
    """One random draw of the realism parameters."""
    uniform = lambda low, high: low + (high - low) * float(torch.rand(1, generator=generator, dtype=torch.float64))  # noqa: E731
    return {
        "bone_gain": uniform(-0.3, 0.5),
        "photons": math.exp(uniform(*(math.log(bound) for bound in RANGES["photons"]))),
        "blur_px": uniform(0.4, 1.2),
        "gamma": uniform(0.8, 1.25),
    }


def bone_contrast_attenuation(hu: torch.Tensor, bone_gain: float) -> torch.Tensor:
    """Attenuation (1/mm) with bone contrast changed by ``bone_gain`` relative to soft tissue."""
    bone = torch.sigmoid((hu.to(torch.float32) - 250.0) / 50.0)
    return hu_to_attenuation(hu.to(torch.float32)) * (1.0 + bone_gain * bone)


def detector_effects(line_integrals: torch.Tensor, draw: dict[str, float], generator: torch.Generator) -> torch.Tensor:
    """Noise, blur and non-linearity applied to a ``(rows, cols)`` DRR (returns float32 line integrals)."""
    parameters = [torch.tensor([draw[key]], dtype=torch.float64) for key in ("photons", "blur_px", "gamma")]
    return detector_effects_batch(line_integrals[None], *parameters, generator)[0]


def detector_effects_batch(
    line_integrals: torch.Tensor,
    photons: torch.Tensor,
    blur_px: torch.Tensor,
    gamma: torch.Tensor,
    generator: torch.Generator,
    exposure_control: bool = True,
) -> torch.Tensor:
    """:func:`detector_effects` on ``(B, rows, cols)`` images with per-image ``(B,)`` parameters (CPU generator).

    ``photons``: quanta per pixel at the median fluence of each image's central half
    (``exposure_control``, the default), or per pixel of unattenuated beam (False: the
    first version, which left a few dozen quanta behind a lumbar spine).
    """
    batch = line_integrals.shape[0]
    fluence = torch.exp(-line_integrals.detach().to(torch.float64).cpu())
    photons = photons.to(torch.float64).reshape(batch, 1, 1)
    if exposure_control:  # the simulator's reference, every pixel exposed (collimation comes later in training)
        exposed = torch.ones(fluence.shape[1:], dtype=torch.bool)
        photons = photons / torch.tensor([exposure_reference(image, exposed) for image in fluence], dtype=torch.float64).reshape(batch, 1, 1)
    expected = (photons * fluence).clamp(max=1e15)
    counts = torch.poisson(expected, generator=generator)
    sigma = blur_px.to(torch.float64).reshape(batch, 1).clamp(min=1e-3)
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernels = torch.exp(-offsets.square() / (2 * sigma**2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True))[:, None, None]  # (B, 1, 1, taps)
    blurred = F.pad(counts[None], (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(blurred, kernels, groups=batch)
    blurred = F.conv2d(blurred, kernels.transpose(-1, -2), groups=batch)[0]
    integrals = -torch.log(blurred.clamp(min=0.5) / photons)
    peak = integrals.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
    shaped = peak * (integrals.clamp(min=0) / peak) ** gamma.to(torch.float64).reshape(batch, 1, 1)
    return shaped.to(torch.float32).to(line_integrals.device)
