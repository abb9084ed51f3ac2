"""``sopi train fine``: the fine module's double-backward training (paper eq. 7, section 3.2).

Each step draws one training CT, target poses ``theta_t`` and current poses
``theta = theta_t + offset`` (both normal, rotation 20 deg and translation 20 mm by
default, the paper's fine-module settings), and:

1. renders the fixed image ``I_f`` from the full CT at ``theta_t`` and augments it like
   RTPI's targets (:mod:`sopi.training.augmentation`);
2. renders the moving image ``I_m`` from the spine-only CT (``V_seg``) and the projected
   mask ``M'`` at ``theta``, differentiably in ``theta``;
3. embeds both (:class:`sopi.nets.encoder.FineNet`) and takes the masked distance ``L_N``
   (eq. 6; over every cell when the config's ``masked_loss`` is off, the EL ablation);
4. first backward: ``V = dL_N / dtheta`` with ``create_graph=True`` (through the encoders
   and the projector);
5. geodesic gradient ``V'`` of the SE(3) distance between ``theta`` and ``theta_t``
   (:func:`sopi.distances.geodesic_gradient`);
6. loss ``|V'_r/|V'_r| - V_r/|V_r|| + |V'_t/|V'_t| - V_t/|V_t||`` (or, with
   ``loss="axis-sign"``, the per-axis sign loss of :func:`sopi.nets.fine_loss.axis_sign_loss`);
   the second backward trains both encoders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..distances import geodesic_gradient
from ..errors import InputError
from ..geometry import CArmGeometry
from ..nets.encoder import EncoderConfig, FineNet
from ..nets.fine_loss import FINE_LOSSES, direction_loss, part_cosines
from ..nets.inputs import standardize_xray
from ..volume import Volume
from .augmentation import AugmentSettings, TaskSettings, augment_xrays
from .cases import CaseTask, TrainingCase, prepare_cases
from .distributed import DistContext, unwrap

__all__ = ["FineSettings", "FineTask", "start_offsets"]


@dataclass
class FineSettings(TaskSettings):
    """Pose pairs, batch and rendering of fine-module training."""

    batch_size: int = 4
    target_sd: tuple[float, float] = (20.0, 20.0)  # (deg, mm) spread of theta_t about the nominal view
    offset_sd: tuple[float, float] = (20.0, 20.0)  # (deg, mm) spread of theta - theta_t
    view: str = "ap"
    step_mm: float = 3.0
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    loss: str = "direction"  # "direction": the paper's eq. 7; "axis-sign": per-axis sign agreement (nets.fine_loss)
    one_axis_fraction: float = 0.0  # share of pairs offset along one random axis only (0: the paper's pairs)

    def __post_init__(self) -> None:
        if self.loss not in FINE_LOSSES:
            raise InputError(f"fine training: loss must be one of {', '.join(FINE_LOSSES)}, got {self.loss!r}")
        if not 0.0 <= self.one_axis_fraction <= 1.0:
            raise InputError(f"fine training: one_axis_fraction must lie in [0, 1], got {self.one_axis_fraction!r}")


def _normal(count: int, spread: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    sd = torch.tensor([spread[0]] * 3 + [spread[1]] * 3, dtype=torch.float64)
    return torch.randn(count, 6, generator=generator, dtype=torch.float64) * sd


def start_offsets(count: int, spread: tuple[float, float], one_axis_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """``(count, 6)`` offsets theta - theta_t: normal with ``spread`` (deg, mm) on every axis, except that a
    ``one_axis_fraction`` share of the rows keeps one random axis only (the others 0), so those pairs
    teach each axis's own response, depth's included, without the in-plane error masking it.
    With a fraction of 0 the draws are exactly the all-axes ones (no extra random numbers)."""
    offsets = _normal(count, spread, generator)
    if one_axis_fraction <= 0.0:
        return offsets
    chosen = torch.rand(count, generator=generator, dtype=torch.float64) < one_axis_fraction
    axis = torch.randint(0, 6, (count,), generator=generator)
    only = torch.nn.functional.one_hot(axis, 6).to(offsets.dtype)
    return torch.where(chosen[:, None], offsets * only, offsets)


class FineTask(CaseTask):
    """Fine-module training on one CT (patient-specific) or several (population)."""

    kind = "fine"

    def __init__(
        self,
        cases: Sequence[tuple[Volume | str | Path, Volume | str | Path]],
        geometry: CArmGeometry,
        config: EncoderConfig,
        settings: FineSettings,
        context: DistContext,
    ) -> None:
        self.geometry, self.view, self.config, self.options = geometry, settings.view, config, settings
        self.cases: list[TrainingCase] = prepare_cases(
            cases, geometry, settings.view, config.image_size, None, 0.0, settings.step_mm, context.device, with_spine=True,
            moving_image=config.moving_image,
        )

    def build_network(self) -> nn.Module:
        return FineNet(self.config)

    def draw_pairs(self, generator: torch.Generator) -> tuple[TrainingCase, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch of pose pairs on one drawn CT: ``(case, theta_t (B, 6), theta (B, 6), fixed (B, 1, S, S))``,
        the fixed images rendered at ``theta_t`` and augmented (step 1 of the module docstring)."""
        options = self.options
        case = self.draw_case(generator)
        target = _normal(options.batch_size, options.target_sd, generator)
        current = target + start_offsets(options.batch_size, options.offset_sd, options.one_axis_fraction, generator)
        with torch.no_grad():
            fixed = augment_xrays(case.projector(case.nominal.pose(target).to(case.projector.volume.device)), generator, options.augment)[:, None]
        return case, target, current, fixed

    @staticmethod
    def learned_gradients(network: nn.Module, case: TrainingCase, current: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dL_N/dtheta (B, 6), L_N (B,))`` at poses ``current`` against ``fixed`` (steps 2-4); the
        gradient keeps its graph (``create_graph=True``) so a loss on it trains the encoders."""
        theta = current.to(case.projector.volume.device).requires_grad_(True)
        rendered = case.spine_projector(case.nominal.pose(theta))  # (B, 2, S, S): moving DRR (V_seg or the whole CT) and M'
        moving = standardize_xray(rendered[:, 0])[:, None]
        embedded_moving, embedded_fixed = network(moving, fixed)
        distance = unwrap(network).distance(embedded_moving, embedded_fixed, rendered[:, 1].detach())
        (learned,) = torch.autograd.grad(distance.sum(), theta, create_graph=True)
        return learned, distance

    def pose_gradients(self, network: nn.Module, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch of pose pairs: ``(learned dL_N/dtheta (B, 6), geodesic gradient (B, 6), L_N (B,))``."""
        case, target, current, fixed = self.draw_pairs(generator)
        learned, distance = self.learned_gradients(network, case, current, fixed)
        return learned, geodesic_gradient(current, target).to(learned), distance

    def step_loss(self, network: nn.Module, generator: torch.Generator, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        learned, geodesic, distance = self.pose_gradients(network, generator)
        loss = FINE_LOSSES[self.options.loss](learned, geodesic).mean()
        with torch.no_grad():
            rotation, translation = part_cosines(learned, geodesic)
            metrics = {
                "loss": float(loss),
                "direction_loss": float(direction_loss(learned, geodesic).mean()),
                "loss_feature_distance": float(distance.mean()),
                "cosine_rotation": float(rotation.mean()),
                "cosine_translation": float(translation.mean()),
            }
        return loss, metrics
