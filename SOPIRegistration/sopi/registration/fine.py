"""Fine registration with learned embedded features (SOPI's iterative module, inference).

Gradient descent on the pose ``theta`` through the differentiable projector and the
trained encoders: the moving image is the spine-only DRR at ``theta`` (``V_seg``; the whole
CT's DRR for a model whose config's ``moving_image`` is ``ct``), the
loss is the masked embedded-feature distance ``L_N`` (paper eq. 6; unmasked for a model
trained with ``masked_loss`` off) to the fixed X-ray's embedding (computed once). The
paper's schedule: all six parameters move for ``rotation_iterations`` steps, then the
rotation is frozen and the translation goes on
until ``L_N`` stops improving. Adam takes the steps; the stopping rule and the returned
pose look only at ``L_N``, never at a ground truth.
"""

from __future__ import annotations

import torch

from ..drr import Projector
from ..geometry import CArmGeometry, NominalView
from ..nets.inputs import network_image, standardize_xray
from ..nets.model_file import LoadedModel
from ..render import spine_channels
from ..volume import Volume
from .methods import FineStage
from .optimizers import Monitor, OptimizerResult, adam

__all__ = ["FineObjective", "fine_register"]


class FineObjective:
    """``theta (P, 6) -> L_N (P,)`` for one X-ray, differentiable in ``theta``."""

    def __init__(
        self,
        model: LoadedModel,
        attenuation: Volume,
        spine: Volume,
        reference: NominalView,
        xray: torch.Tensor,
        geometry: CArmGeometry,
        step_mm: float = 2.0,
        device: torch.device | str = "cpu",
    ) -> None:
        network = model.network
        size = network.config.image_size
        self.projector = Projector(spine_channels(attenuation, spine, network.config.moving_image), geometry.resized(size, size), step_mm=step_mm).to(device)
        self.network, self.reference = network, reference
        fixed = network_image(xray, size)[None, None].to(device)
        with torch.no_grad():
            self.embedded_fixed = network.fixed(fixed)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        rendered = self.projector(self.reference.pose(theta.reshape(-1, 6)))  # (P, 2, S, S)
        embedded = self.network.moving(standardize_xray(rendered[:, 0])[:, None])
        fixed = self.embedded_fixed.expand(embedded.shape[0], -1, -1, -1)
        return self.network.distance(embedded, fixed, rendered[:, 1].detach()).to(torch.float64)


def fine_register(objective: FineObjective, start: torch.Tensor, stage: FineStage, monitor: Monitor) -> OptimizerResult:
    """Run the schedule of ``stage`` from ``start`` (6,); returns the pose with the lowest ``L_N``."""
    rotation_deg, translation_mm = stage.scale
    everything = torch.tensor([rotation_deg] * 3 + [translation_mm] * 3, dtype=torch.float64)
    translation_only = torch.tensor([0.0] * 3 + [translation_mm] * 3, dtype=torch.float64)
    first = adam(
        objective, start, everything, iterations=stage.rotation_iterations, learning_rate=stage.learning_rate,
        patience=stage.patience, tolerance=stage.tolerance, monitor=monitor,
    )
    second = adam(
        objective, first.theta, translation_only, iterations=stage.translation_iterations, learning_rate=stage.learning_rate,
        patience=stage.patience, tolerance=stage.tolerance, monitor=monitor,
    )
    best = second if second.loss <= first.loss else first
    return OptimizerResult(best.theta, best.loss, first.iterations + second.iterations, first.evaluations + second.evaluations, second.converged)
