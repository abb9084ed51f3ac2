"""Make simulated DRRs look like real X-rays, per image, from a seeded generator.

Applied to a batch rendered as two channels, soft tissue and bone (line integrals of
the attenuation below and above the bone step, see :func:`split_bone`), so that bone
contrast can change per image without re-rendering:

1. bone contrast: ``soft + (1 + gain) * bone``, ``gain`` uniform in ``bone_gain``;
2. instruments (probability ``instruments_p``): 1 to ``instruments_max`` K-wires, screws or
   plates added to the line integrals (:func:`sopi.xray_physics.instrument_line_integrals`);
3. scatter (probability ``scatter_p``): ``-log(P + S)`` with ``S`` a Gaussian of the primary
   ``P`` (sigma a fraction ``scatter_sigma`` of the width) at a scatter-to-primary ratio in
   ``scatter_to_primary``, as :mod:`sopi.xray_physics` simulates it;
4. detector physics (:func:`sopi.augment.detector_effects_batch`): Poisson noise at a
   log-uniform photon count at the detector behind the patient (the simulator's range and
   exposure control), Gaussian blur, gamma;
5. collimation (probability ``collimation_p``): up to ``collimation_max`` of the image
   on each side replaced by a flat shutter (the image's maximum or minimum); a circular
   field (probability ``field_p``, radius 0.42-0.6 of the width) likewise;
6. random erasing (probability ``erase_p``): a rectangle of 2-15 % of the image set to
   the image mean; box corruption (probability ``box_p``): a rectangle set to a random
   level between the image's minimum and maximum (the SOPI authors' later domain
   randomisation);
7. standardisation (zero mean, unit variance), then inversion (probability ``invert_p``).

Masked regions at inference (:func:`sopi.xray_prep.prepare_xray`) are filled from their
surroundings; shutters, erased and corrupted boxes teach the networks to ignore such regions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..augment import detector_effects_batch
from ..nets.inputs import standardize_xray
from ..preprocess import hu_to_attenuation
from ..volume import Volume
from ..xray_physics import RANGES

__all__ = ["AugmentSettings", "TaskSettings", "augment_xrays", "split_bone"]

_BONE_HU = 250.0
_BONE_WIDTH_HU = 50.0


@dataclass
class AugmentSettings:
    """Ranges and probabilities of each augmentation (``enabled=False`` only standardises)."""

    enabled: bool = True
    bone_gain: tuple[float, float] = (-0.3, 0.5)
    photons: tuple[float, float] = RANGES["photons"]  # quanta per pixel behind the patient (until 2026-12-03: 3e3-3e4 of unattenuated beam)
    blur_px: tuple[float, float] = (0.0, 1.0)
    gamma: tuple[float, float] = (0.8, 1.25)
    collimation_p: float = 0.3
    collimation_max: float = 0.15
    erase_p: float = 0.25
    invert_p: float = 0.1
    scatter_p: float = 0.5
    scatter_to_primary: tuple[float, float] = (0.2, 1.5)
    scatter_sigma: tuple[float, float] = (0.1, 0.3)
    instruments_p: float = 0.4
    instruments_max: int = 3
    field_p: float = 0.3
    box_p: float = 0.15

    def to_dict(self) -> dict:
        return _lists(asdict(self))


class TaskSettings:
    """What RTPI's and the fine module's settings dataclasses share: an ``augment`` field, and
    the round trip through a model's JSON (tuples are stored as lists)."""

    augment: AugmentSettings

    def to_dict(self) -> dict:
        return {**_lists(asdict(self)), "augment": self.augment.to_dict()}

    @classmethod
    def from_dict(cls, recorded: dict):
        """Settings as :meth:`to_dict` recorded them (``training.task`` in a model's JSON)."""
        values = _tuples(recorded)
        return cls(**{**values, "augment": AugmentSettings(**_tuples(values["augment"]))})


def _lists(values: dict) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def _tuples(values: dict) -> dict:
    return {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


def split_bone(ct: Volume) -> Volume:
    """Two-channel attenuation (1/mm): soft tissue and bone (a logistic step at 250 HU, 50 HU wide)."""
    hu = ct.data.to(torch.float32)
    attenuation = hu_to_attenuation(hu)
    bone = attenuation * torch.sigmoid((hu - _BONE_HU) / _BONE_WIDTH_HU)
    return ct.with_data(torch.stack([attenuation - bone, bone]))


def _uniform(count: int, bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)


def _physics(images: torch.Tensor, generator: torch.Generator, settings: AugmentSettings) -> torch.Tensor:
    """Instruments and scatter on ``(B, S, S)`` line integrals (per image, seeded)."""
    from ..registration.problem import with_scatter
    from ..xray_physics import Instrument, instrument_line_integrals

    batch, rows, cols = images.shape
    result = []
    for index in range(batch):
        image = images[index]
        chance = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        if chance[0] < settings.instruments_p:
            count = int(torch.randint(1, settings.instruments_max + 1, (1,), generator=generator))
            tools = []
            for _ in range(count):
                x, y, angle, length, width, strength = torch.rand(6, generator=generator, dtype=torch.float64).tolist()
                half = (0.1 + 0.3 * length) * cols
                cx, cy, angle = (0.2 + 0.6 * x) * cols, (0.2 + 0.6 * y) * rows, angle * math.pi
                diameter = (0.01 + 0.1 * width) * cols
                tools.append(Instrument(
                    "screw", (cx - half * math.cos(angle), cy - half * math.sin(angle)),
                    (cx + half * math.cos(angle), cy + half * math.sin(angle)), diameter, (0.5 + 2.5 * strength) / diameter,
                ))
            image = image + instrument_line_integrals(tools, (rows, cols)).to(image)
        if chance[1] < settings.scatter_p:
            ratio, sigma = _uniform(1, settings.scatter_to_primary, generator), _uniform(1, settings.scatter_sigma, generator)
            image = with_scatter(image[None], float(ratio), float(sigma) * cols)[0]
        result.append(image)
    return torch.stack(result)


def augment_xrays(channels: torch.Tensor, generator: torch.Generator, settings: AugmentSettings) -> torch.Tensor:
    """``(B, 2, S, S)`` soft/bone line integrals -> ``(B, S, S)`` standardised, augmented images."""
    soft, bone = channels[:, 0], channels[:, 1]
    batch, rows, cols = soft.shape
    if not settings.enabled:
        return standardize_xray(soft + bone)
    gain = _uniform(batch, settings.bone_gain, generator).to(soft).reshape(batch, 1, 1)
    images = _physics(soft + (1.0 + gain) * bone, generator, settings)
    log_photons = _uniform(batch, (math.log(settings.photons[0]), math.log(settings.photons[1])), generator)
    images = detector_effects_batch(
        images, log_photons.exp(), _uniform(batch, settings.blur_px, generator), _uniform(batch, settings.gamma, generator), generator
    )
    images = images.clone()
    for index in range(batch):
        draws = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        if draws[0] < settings.collimation_p:
            margins = (torch.rand(4, generator=generator, dtype=torch.float64) * settings.collimation_max).tolist()
            top, bottom = round(margins[0] * rows), round(margins[1] * rows)
            left, right = round(margins[2] * cols), round(margins[3] * cols)
            shutter = images[index].max() if draws[1] < 0.5 else images[index].min()
            inside = torch.zeros(rows, cols, dtype=torch.bool, device=images.device)
            inside[top : rows - bottom, left : cols - right] = True
            images[index] = torch.where(inside, images[index], shutter)
        extra = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        if extra[0] < settings.field_p:
            radius = (0.42 + 0.18 * extra[1]) * cols
            row, col = torch.meshgrid(torch.arange(rows, device=images.device), torch.arange(cols, device=images.device), indexing="ij")
            inside = (row + 0.5 - rows / 2).square() + (col + 0.5 - cols / 2).square() <= radius**2
            level = images[index].max() if extra[2] < 0.5 else images[index].min()
            images[index] = torch.where(inside, images[index], level)
        if torch.rand(1, generator=generator, dtype=torch.float64).item() < settings.box_p:
            top, left, height, width, level = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
            height, width = max(1, round((0.1 + 0.3 * height) * rows)), max(1, round((0.1 + 0.3 * width) * cols))
            top, left = int(top * (rows - height + 1)), int(left * (cols - width + 1))
            low, high = float(images[index].min()), float(images[index].max())
            images[index, top : top + height, left : left + width] = low + level * (high - low)
        if draws[2] < settings.erase_p:
            area, aspect, row_at, col_at = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
            area = (0.02 + 0.13 * area) * rows * cols
            aspect = math.exp((aspect - 0.5) * math.log(9.0))  # 1/3 .. 3
            height = max(1, min(rows, round(math.sqrt(area * aspect))))
            width = max(1, min(cols, round(math.sqrt(area / aspect))))
            top, left = int(row_at * (rows - height + 1)), int(col_at * (cols - width + 1))
            images[index, top : top + height, left : left + width] = images[index].mean()
    images = standardize_xray(images)
    flip = torch.rand(batch, generator=generator, dtype=torch.float64) < settings.invert_p
    return torch.where(flip.to(images.device).reshape(batch, 1, 1), -images, images)
