"""The learned stages of a registration: loading the networks a method needs, RTPI's pose and the fine module's
refinement, each scored like the optimisers' stages so that the passes compare them alike."""

from __future__ import annotations

import torch

from ..device import resolve_device
from ..errors import InputError
from ..io_xray import XRay
from ..nets.model_file import LoadedModel, load_model
from ..volume import Volume
from .methods import needs_model
from .optimizers import Monitor, OptimizerResult
from .problem import PoseProblem

__all__ = ["load_networks"]


def load_networks(method: str, models: dict, device: str | torch.device = "auto") -> dict[str, LoadedModel]:
    """The networks ``method`` needs, by kind, from ``models`` (``{"rtpi": ..., "fine": ...}``,
    each a file or an already loaded model, which is passed through); a clear error for a
    missing or wrong one."""
    loaded = {}
    for kind in sorted(needs_model(method)):
        given = models.get(kind)
        option = "--model" if kind == "rtpi" else "--fine-model"
        if given is None:
            raise InputError(f"method {method!r} needs a trained {kind.upper()} model ({option} FILE.pt)")
        network = given if isinstance(given, LoadedModel) else load_model(given, device=resolve_device(device))
        if network.kind != kind:
            raise InputError(f"method {method!r}: {option} needs a {kind!r} model; {network.path} holds a {network.kind!r} model")
        loaded[kind] = network
    return loaded


def _fine_stage(problem: PoseProblem, network: LoadedModel, stage, spine: Volume, fixed: XRay, theta: torch.Tensor, monitor: Monitor):
    """Learned fine registration from ``theta``; scored by gradient correlation like the other stages."""
    from ..nets.predict import check_geometry
    from .fine import FineObjective, fine_register

    check_geometry(network, problem.geometry)
    objective = FineObjective(
        network, problem.volume, spine, problem.reference, fixed.image, problem.geometry, device=problem.device
    )
    outcome = fine_register(objective, theta, stage, monitor)
    return OptimizerResult(outcome.theta, -_score(problem, outcome.theta), outcome.iterations, outcome.evaluations, outcome.converged)


def _network_stage(problem: PoseProblem, network: LoadedModel, spine: Volume, fixed: XRay, monitor: Monitor):
    """Ask the network for theta (relative to the problem's reference view); score it like the optimisers do."""
    from ..nets.predict import check_geometry, rtpi_theta

    monitor.report(0, 1)
    check_geometry(network, problem.geometry)
    estimate = rtpi_theta(network, problem.volume, spine, problem.reference, fixed.image)
    return OptimizerResult(estimate, -_score(problem, estimate), 1, 1, True)


def _score(problem: PoseProblem, theta: torch.Tensor) -> float:
    """Gradient correlation at the half-resolution level: how a learned stage's pose is reported."""
    with torch.no_grad():
        return float(problem.similarity(theta[None], 2, "gc")[0])
