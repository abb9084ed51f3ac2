"""Pose optimisers over ``theta`` (deg, mm): CMA-ES (batched), Adam (through the projector), Powell.

Each works in normalised coordinates ``x = (theta - start) / scale`` so one step size
fits rotations (deg) and translations (mm), calls ``monitor.check()`` between
iterations (cancellation) and returns the best point it evaluated.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import Cancelled

__all__ = ["AdamStep", "Monitor", "OptimizerResult", "adam", "cma_es", "line_scan", "multi_start", "powell"]


@dataclass
class Monitor:
    """Progress callback ``progress(fraction, message)`` and cancel flag ``cancel() -> bool``."""

    progress: Callable[[float, str], None] | None = None
    cancel: Callable[[], bool] | None = None
    start_fraction: float = 0.0
    end_fraction: float = 1.0
    label: str = ""

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("registration cancelled")

    def report(self, done: int, total: int, detail: str = "") -> None:
        self.check()
        if self.progress is not None:
            fraction = self.start_fraction + (self.end_fraction - self.start_fraction) * min(1.0, done / max(total, 1))
            self.progress(fraction, f"{self.label} {done}/{total}{' ' + detail if detail else ''}".strip())


@dataclass
class OptimizerResult:
    theta: torch.Tensor  # (6,) float64
    loss: float
    iterations: int
    evaluations: int
    converged: bool
    # cma_es(..., checkpoints=...): the best point so far after each of those generations
    checkpoints: dict[int, OptimizerResult] = field(default_factory=dict)


def cma_es(
    loss: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    scale: torch.Tensor,
    *,
    generations: int,
    population: int | None = None,
    sigma: float = 1.0,
    bound: float = 4.0,
    seed: int = 0,
    tolerance: float = 1e-4,
    patience: int = 8,
    restarts: int = 0,
    monitor: Monitor | None = None,
    checkpoints: Sequence[int] = (),
    stop_at: Callable[[OptimizerResult], bool] | None = None,
) -> OptimizerResult:
    """CMA-ES (``cmaes`` package) with the whole population rendered in one batch.

    ``loss`` maps ``(P, 6)`` theta to ``(P,)`` values to minimise. Search is bounded to
    ``start +- bound * scale``. A run stops after ``generations``, when CMA-ES says so, or
    when the best loss improved by less than ``tolerance`` over ``patience`` generations.
    ``restarts`` more runs follow (IPOP: population doubled each time, restarted from the
    best point so far); the best point over all runs is returned. ``checkpoints``: generations
    of the first run after which the best point so far is kept in the result's ``checkpoints``
    (the final point for a run that stopped before); with the same seed, a run stopped there
    would have returned exactly that point. ``stop_at(checkpoint)`` is asked at each checkpoint of the first run; True
    ends that run there (with the same seed, a run stopped there by ``generations`` returns the same point).
    """
    monitor = monitor or Monitor()
    best = _cma_run(loss, start, scale, generations, population, sigma, bound, seed, tolerance, patience, monitor, checkpoints, stop_at)
    size = best.evaluations // max(best.iterations, 1)
    for restart in range(1, restarts + 1):
        size *= 2
        again = _cma_run(loss, best.theta, scale, generations, size, sigma, bound, seed + restart, tolerance, patience, monitor)
        total_iterations, total_evaluations = best.iterations + again.iterations, best.evaluations + again.evaluations
        best = again if again.loss < best.loss else best
        best = OptimizerResult(best.theta, best.loss, total_iterations, total_evaluations, best.converged)
    return best


def _cma_class() -> type:
    """``cmaes.CMA``, imported without ``scipy.stats`` where nothing has imported it yet. The package imports
    ``scipy.stats`` only for its CMA-ES with margin (not used here) and falls back to its own functions when it
    cannot; that import took 0.4-0.6 s of every registration's process (docs/benchmarks.md)."""
    import sys

    if "cmaes" in sys.modules:
        return sys.modules["cmaes"].CMA
    blocked = "scipy.stats" not in sys.modules
    if blocked:
        sys.modules["scipy.stats"] = None  # an import of it raises ImportError meanwhile
    try:
        from cmaes import CMA
    finally:
        if blocked and sys.modules.get("scipy.stats", 0) is None:
            del sys.modules["scipy.stats"]
    return CMA


def _cma_run(loss, start, scale, generations, population, sigma, bound, seed, tolerance, patience, monitor, checkpoints=(), stop_at=None) -> OptimizerResult:
    CMA = _cma_class()

    dimension = start.numel()
    bounds = np.tile([[-bound, bound]], (dimension, 1)).astype(float)
    optimizer = CMA(mean=np.zeros(dimension), sigma=sigma, bounds=bounds, seed=seed, population_size=population)
    best_x, best_loss, evaluations = np.zeros(dimension), float("inf"), 0
    history: list[float] = []
    converged = False
    generation = 0
    kept: dict[int, OptimizerResult] = {}
    for generation in range(1, generations + 1):
        candidates = np.stack([optimizer.ask() for _ in range(optimizer.population_size)])
        theta = start[None] + torch.from_numpy(candidates) * scale[None]
        with torch.no_grad():
            values = _finite_losses(loss(theta).to(torch.float64).numpy())
        evaluations += len(values)
        optimizer.tell(list(zip(candidates, values)))
        index = int(np.argmin(values))
        if values[index] < best_loss:
            best_loss, best_x = float(values[index]), candidates[index]
        history.append(best_loss)
        if generation in checkpoints:
            kept[generation] = OptimizerResult(start + torch.from_numpy(best_x) * scale, best_loss, generation, evaluations, False)
            if stop_at is not None and stop_at(kept[generation]):
                break
        monitor.report(generation, generations, f"loss {best_loss:.4f}")
        if optimizer.should_stop() or (len(history) > patience and history[-patience - 1] - best_loss < tolerance):
            converged = True
            break
    final = OptimizerResult(start + torch.from_numpy(best_x) * scale, best_loss, generation, evaluations, converged)
    final.checkpoints = {**{point: final for point in checkpoints}, **kept}
    return final


def _finite_losses(values: np.ndarray) -> np.ndarray:
    """Losses with NaN/Inf replaced by a value worse than every finite one (ranked last, never chosen).

    Raises :class:`FloatingPointError` when no candidate has a finite loss: the optimiser
    cannot rank anything, and returning a pose would be a silent failure.
    """
    finite = np.isfinite(values)
    if finite.all():
        return values
    if not finite.any():
        raise FloatingPointError("registration: the similarity is NaN or infinite for every candidate pose")
    worst = float(values[finite].max())
    return np.where(finite, values, worst + abs(worst) + 1.0)


def adam(
    loss: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    scale: torch.Tensor,
    *,
    iterations: int,
    learning_rate: float = 0.05,
    tolerance: float = 1e-4,
    patience: int = 10,
    monitor: Monitor | None = None,
) -> OptimizerResult:
    """Adam on ``x`` through the differentiable projector; ``loss`` maps ``(1, 6)`` theta to ``(1,)``.

    ``learning_rate`` is in units of ``scale`` (so 0.05 with scale 1 deg / 2 mm steps about
    0.05 deg and 0.1 mm). Stops when the best loss has not improved by ``tolerance`` for
    ``patience`` iterations; returns the best iterate.
    """
    monitor = monitor or Monitor()
    x = torch.zeros(start.numel(), dtype=torch.float64, requires_grad=True)
    step = AdamStep(x, learning_rate)
    best_x, best_loss, since_best = x.detach().clone(), float("inf"), 0
    iteration = 0
    converged = False
    for iteration in range(1, iterations + 1):
        x.grad = None
        value = loss((start + x * scale)[None])[0]
        current = float(value.detach())
        if not np.isfinite(current):  # a NaN gradient would poison x: stop at the best finite iterate
            if iteration == 1:
                raise FloatingPointError("registration: the similarity is NaN or infinite at the start pose")
            break
        value.backward()
        if current < best_loss - tolerance:
            best_loss, best_x, since_best = current, x.detach().clone(), 0
        else:
            since_best += 1
            if current < best_loss:
                best_loss, best_x = current, x.detach().clone()
        monitor.report(iteration, iterations, f"loss {best_loss:.4f}")
        if since_best >= patience:
            converged = True
            break
        step()
    return OptimizerResult(start + best_x * scale, best_loss, iteration, iteration, converged)


class AdamStep:
    """Adam's update of one tensor (Kingma and Ba 2015, as ``torch.optim.Adam`` does it with its defaults).

    Written out because constructing ``torch.optim.Adam`` imports ``torch._dynamo`` (about
    1.5 s, once per process): longer than a whole Adam stage of a registration.
    """

    def __init__(self, x: torch.Tensor, learning_rate: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.x, self.learning_rate, self.betas, self.eps = x, learning_rate, betas, eps
        self.first, self.second, self.count = torch.zeros_like(x), torch.zeros_like(x), 0

    @torch.no_grad()
    def __call__(self) -> None:
        """Move ``x`` by one step along its current ``grad``."""
        gradient = self.x.grad
        if gradient is None:
            return
        (beta1, beta2), self.count = self.betas, self.count + 1
        self.first.lerp_(gradient, 1 - beta1)
        self.second.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        correction1, correction2 = 1 - beta1**self.count, 1 - beta2**self.count
        denominator = (self.second.sqrt() / math.sqrt(correction2)).add_(self.eps)
        self.x.addcdiv_(self.first, denominator, value=-self.learning_rate / correction1)


def powell(
    loss: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    scale: torch.Tensor,
    *,
    evaluations: int,
    tolerance: float = 1e-4,
    monitor: Monitor | None = None,
) -> OptimizerResult:
    """Powell's method (scipy) on ``x``; ``loss`` maps ``(1, 6)`` theta to ``(1,)``."""
    from scipy.optimize import minimize

    monitor = monitor or Monitor()
    count = 0

    def objective(x: np.ndarray) -> float:
        nonlocal count
        count += 1
        monitor.report(count, evaluations)
        with torch.no_grad():
            value = float(loss((start + torch.from_numpy(x) * scale)[None])[0])
        return value if np.isfinite(value) else np.inf

    result = minimize(objective, np.zeros(start.numel()), method="Powell", options={"maxfev": evaluations, "xtol": 1e-2, "ftol": tolerance})
    return OptimizerResult(start + torch.from_numpy(result.x) * scale, float(result.fun), int(result.nit), count, bool(result.success))


def line_scan(
    loss: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    direction: torch.Tensor,
    *,
    half_steps: int,
    monitor: Monitor | None = None,
) -> OptimizerResult:
    """The best of ``start + k * direction`` for ``k = -half_steps .. half_steps`` (one batch), then the vertex
    of the parabola through it and its two neighbours where it is interior (one more evaluation, kept only
    if better). ``loss`` maps ``(B, 6)`` theta to ``(B,)``; ``direction`` is one step, in theta's units."""
    monitor = monitor or Monitor()
    steps = torch.arange(-half_steps, half_steps + 1, dtype=torch.float64)
    with torch.no_grad():
        values = loss(start.reshape(1, 6) + steps[:, None] * direction.reshape(1, 6)).to(torch.float64)
    finite = torch.where(torch.isfinite(values), values, torch.full_like(values, math.inf))
    best = int(torch.argmin(finite))
    if not math.isfinite(float(finite[best])):
        raise FloatingPointError("registration: the similarity is NaN or infinite along the whole scan")
    theta, value, evaluations = start + steps[best] * direction, float(finite[best]), len(steps)
    if 0 < best < len(steps) - 1:
        below, centre, above = (float(finite[best + offset]) for offset in (-1, 0, 1))
        curvature = below - 2 * centre + above
        if math.isfinite(curvature) and curvature > 0:
            vertex = float(steps[best]) + 0.5 * (below - above) / curvature  # within half a step of the best
            candidate = start + vertex * direction
            with torch.no_grad():
                refined = float(loss(candidate[None])[0])
            evaluations += 1
            if refined < value:
                theta, value = candidate, refined
    monitor.report(1, 1, f"loss {value:.4f}")
    return OptimizerResult(theta, value, 1, evaluations, True)


def multi_start(
    optimize: Callable[[torch.Tensor], OptimizerResult],
    start: torch.Tensor,
    scale: torch.Tensor,
    *,
    starts: int,
    spread: float = 1.0,
    seed: int = 0,
) -> OptimizerResult:
    """Run ``optimize(start_point)`` from ``start`` and ``starts - 1`` seeded points around it
    (``start + N(0, spread) * scale``); return the best result (iterations summed)."""
    generator = torch.Generator().manual_seed(seed)
    points = [start] + [start + torch.randn(start.numel(), generator=generator, dtype=torch.float64) * spread * scale for _ in range(starts - 1)]
    results = [optimize(point) for point in points]
    best = min(results, key=lambda result: result.loss)
    return OptimizerResult(best.theta, best.loss, sum(r.iterations for r in results), sum(r.evaluations for r in results), best.converged)
