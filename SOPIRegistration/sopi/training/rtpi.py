"""``sopi train rtpi``: the RTPI loss (paper eq. 5) on poses simulated online.

Each step draws one training CT (population mode: among several), ``batch_size`` poses
from a protocol (``wide`` by default: rotation N(0, 20 deg) per axis, the paper's),
renders the target X-rays at those poses from the full CT as soft-tissue and bone
channels, augments them (:mod:`sopi.training.augmentation`) and regresses ``theta``:

``loss = alpha * (1 - GD(I_f, I_m)) + beta * mean(((theta_hat - theta) / scale)^2) + lambda * mean((theta_hat / scale)^2)``

* ``GD`` is the gradient difference (:func:`sopi.similarity.gradient_difference`,
  1 when the gradients agree) between the clean target ``I_f`` (before augmentation,
  so the similarity term judges the pose and not the noise) and ``I_m``, the DRR
  rendered through the differentiable projector at the predicted pose;
* ``scale`` is the training distribution's standard deviation per parameter
  (:class:`sopi.nets.RTPIConfig`), so 1 deg of a 20-deg spread weighs like 0.75 mm of a
  15-mm one;
* ``R`` is the paper's L2 regulariser on the predicted parameters (in the same units):
  it keeps predictions near the nominal view when the image says little.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..geometry import CArmGeometry
from ..nets.rtpi import RTPI, RTPIConfig
from ..protocols import get_protocol
from ..similarity import gradient_difference
from ..volume import Volume
from .augmentation import AugmentSettings, TaskSettings, augment_xrays
from .cases import CaseTask, TrainingCase, prepare_cases
from .distributed import DistContext, unwrap

__all__ = ["RTPISettings", "RTPITask"]


@dataclass
class RTPISettings(TaskSettings):
    """Loss weights (paper eq. 5), batch, pose distribution and rendering of RTPI training."""

    batch_size: int = 16
    alpha: float = 1.0  # gradient-difference similarity
    beta: float = 1.0  # supervised MSE on normalised parameters
    lam: float = 0.01  # L2 regulariser on the normalised prediction
    protocol: str = "wide"
    view: str = "ap"
    step_mm: float = 2.0  # ray-marching step of the training renders
    augment: AugmentSettings = field(default_factory=AugmentSettings)


class RTPITask(CaseTask):
    """RTPI training on one CT (patient-specific) or several (population)."""

    kind = "rtpi"

    def __init__(
        self,
        cases: Sequence[tuple[Volume | str | Path, Volume | str | Path]],
        geometry: CArmGeometry,
        config: RTPIConfig,
        settings: RTPISettings,
        context: DistContext,
    ) -> None:
        self.protocol = get_protocol(settings.protocol)  # unknown names fail before any loading
        self.geometry, self.view, self.config, self.options = geometry, settings.view, config, settings
        self.cases: list[TrainingCase] = prepare_cases(
            cases, geometry, settings.view, config.xray_size, config.ct_size, config.ct_side_mm, settings.step_mm, context.device
        )

    def build_network(self) -> nn.Module:
        return RTPI(self.config)

    def step_loss(self, network: nn.Module, generator: torch.Generator, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        options = self.options
        case = self.draw_case(generator)
        theta = self.protocol.sample(options.batch_size, generator)  # (B, 6) float64, deg and mm
        device = case.cube.device
        with torch.no_grad():
            channels = case.projector(case.nominal.pose(theta).to(device))  # (B, 2, S, S)
            xray = augment_xrays(channels, generator, options.augment)[:, None]
            clean = channels.sum(dim=1)
        predicted = network(case.cube, xray)  # (B, 6) float32
        target = theta.to(predicted)
        module = unwrap(network)
        mse = module.normalized(predicted - target).square().mean()
        regulariser = module.normalized(predicted).square().mean()
        loss = options.beta * mse + options.lam * regulariser
        metrics = {"loss_mse": float(mse.detach()), "loss_reg": float(regulariser.detach())}
        if options.alpha > 0:
            moving = case.projector(case.nominal.pose(predicted.to(torch.float64))).sum(dim=1)
            similarity_loss = 1.0 - gradient_difference(clean, moving).mean()
            loss = loss + options.alpha * similarity_loss
            metrics["loss_gd"] = float(similarity_loss.detach())
        errors = (predicted.detach() - target).abs().mean(dim=0)
        metrics.update({
            "loss": float(loss.detach()),
            "rotation_error_deg": float(errors[:3].mean()),
            "translation_error_mm": float(errors[3:].mean()),
        })
        return loss, metrics
