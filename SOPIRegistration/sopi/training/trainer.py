"""The training loop shared by the networks: SGD with a cyclic learning rate, DDP,
resumable checkpoints, a CSV log, a loss plot, progress, cancel and a time budget.

A *task* supplies the network and the loss of one step (see :class:`TrainingTask`);
this module does everything else. Files written into ``out_dir`` (rank 0 only, each
atomically): ``checkpoint.pt`` (resume state, every ``checkpoint_every`` steps and at
the end), ``log.csv``, ``loss.png``, and the model ``NAME.pt`` + ``NAME.json``
(:mod:`sopi.nets.model_file`).
"""

from __future__ import annotations

import math
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..atomic import atomic_path, write_json
from ..errors import Cancelled, InputError
from ..geometry import CArmGeometry
from ..nets.model_file import load_weights, save_model
from .distributed import DistContext, init_distributed
from .log import read_log, write_log, write_loss_plot

__all__ = ["OptimSettings", "TrainingTask", "cyclic_learning_rate", "train"]


@dataclass
class OptimSettings:
    """Optimiser and schedule (the paper's RTPI settings by default: SGD, momentum 0.9,
    learning rate cycling between 1e-3 and 1e-2 every 100 steps). ``optimizer="adam"``
    uses Adam (``momentum`` as beta1) under the same cyclic schedule."""

    steps: int = 2000
    optimizer: str = "sgd"
    base_lr: float = 1e-3
    max_lr: float = 1e-2
    lr_cycle_steps: int = 100  # a full triangle, base -> max -> base
    momentum: float = 0.9
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    max_minutes: float | None = None  # wall-time budget: stop (and save) at the last cycle end that fits


def cyclic_learning_rate(step: int, settings: OptimSettings) -> float:
    """Triangular cyclic learning rate (Smith 2017): ``base_lr`` at step 0, ``max_lr`` half a cycle later."""
    phase = (step % settings.lr_cycle_steps) / settings.lr_cycle_steps
    return settings.base_lr + (settings.max_lr - settings.base_lr) * (1.0 - abs(2.0 * phase - 1.0))


class TrainingTask(Protocol):
    """What a network's training supplies to :func:`train`."""

    kind: str
    geometry: CArmGeometry
    view: str

    def build_network(self) -> nn.Module: ...

    def step_loss(self, network: nn.Module, generator: torch.Generator, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch (drawn from ``generator``) and the metrics to log."""
        ...

    def settings(self) -> dict:
        """JSON description of the task's own settings (recorded; must match on resume)."""
        ...

    def training_data(self) -> list[dict]: ...


def train(
    task_factory: Callable[[DistContext], TrainingTask],
    out_dir: str | Path,
    optim: OptimSettings,
    *,
    model_name: str = "model",
    resume: bool = False,
    initial_weights: str | Path | None = None,
    device: str | torch.device = "auto",
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Train; returns the summary written to ``summary.json``. Runs under ``torchrun`` too.

    ``initial_weights``: a model file (:mod:`sopi.nets.model_file`) of the same kind and
    configuration to start from instead of a random initialisation (fine-tuning a pretrained
    network); it is recorded in the model's JSON. A resumed run continues from its checkpoint.
    """
    context = init_distributed(device)
    try:
        return _train(task_factory(context), context, Path(out_dir), optim, model_name, resume, progress, cancel, initial_weights)
    finally:
        context.close()


def _train(task, context, out, optim, model_name, resume, progress, cancel, initial_weights=None) -> dict:
    if optim.steps < 1 or optim.lr_cycle_steps < 2 or optim.checkpoint_every < 1 or optim.log_every < 1:
        raise InputError("training: steps, checkpoint_every and log_every must be >= 1 and lr_cycle_steps >= 2")
    started = time.perf_counter()
    torch.manual_seed(optim.seed)  # identical initial weights on every rank
    network = task.build_network().to(context.device)
    if optim.optimizer == "sgd":
        optimizer = torch.optim.SGD(network.parameters(), lr=optim.base_lr, momentum=optim.momentum)
    elif optim.optimizer == "adam":
        optimizer = torch.optim.Adam(network.parameters(), lr=optim.base_lr, betas=(optim.momentum, 0.999))
    else:
        raise InputError(f"training: optimizer must be 'sgd' or 'adam', got {optim.optimizer!r}")
    generator = torch.Generator().manual_seed(optim.seed * 1_000_003 + context.rank)
    recorded = {"kind": task.kind, "config": network.config.to_dict(), "task": task.settings(), "optim": _schedule(optim)}
    if initial_weights is not None:
        recorded["initial_weights"] = _start_from(network, task.kind, Path(initial_weights))
    checkpoint_path = out / "checkpoint.pt"
    start_step, previous_seconds = 0, 0.0
    if resume:
        start_step, previous_seconds = _restore(checkpoint_path, recorded, network, optimizer, generator, context)
    out.mkdir(parents=True, exist_ok=True)
    model = network
    if context.active:
        model = nn.parallel.DistributedDataParallel(network, device_ids=[context.device.index] if context.device.type == "cuda" else None)
    rows = read_log(out / "log.csv", start_step) if context.is_main else []
    step, stopped = start_step, "steps"
    model.train()
    loop_started = time.perf_counter()
    while step < optim.steps:
        learning_rate = cyclic_learning_rate(step, optim)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        loss, metrics = task.step_loss(model, generator, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(f"training diverged at step {step} (loss {float(loss.detach())}); lower the learning rate")
        if step % optim.log_every == 0 or step == optim.steps:
            names = sorted(metrics)
            averaged = context.mean(torch.tensor([metrics[name] for name in names], dtype=torch.float64)).tolist()
            row = {"step": step, "lr": learning_rate, **{name: round(value, 6) for name, value in zip(names, averaged)}}
            row["elapsed_s"] = round(previous_seconds + time.perf_counter() - started, 2)
            rows.append(row)
        if progress is not None and context.is_main:
            progress(step / optim.steps, f"step {step}/{optim.steps} loss {float(loss.detach()):.4f}")
        now = time.perf_counter()
        over_time = _out_of_time(optim, step, step - start_step, previous_seconds + now - started, now - loop_started)
        cancelled = cancel is not None and context.is_main and cancel()
        stop = context.any(over_time or cancelled)
        if stop or step % optim.checkpoint_every == 0 or step == optim.steps:
            _save_checkpoint(checkpoint_path, recorded, network, optimizer, generator, step, previous_seconds + time.perf_counter() - started, context)
            if context.is_main:
                write_log(out / "log.csv", rows)
        if stop:
            if context.any(cancelled):
                raise Cancelled(f"training cancelled at step {step}; resume from {checkpoint_path}")
            stopped = "time budget"
            break
    seconds = previous_seconds + time.perf_counter() - started
    checksums = context.gather(_parameter_checksum(network))
    summary = {
        "kind": task.kind, "steps_done": step, "steps_planned": optim.steps, "stopped_by": stopped,
        "train_time_s": round(seconds, 1), "world_size": context.world_size, "hardware": _hardware(context),
        "replica_checksums": checksums, "final": rows[-1] if rows else {},
    }
    if context.is_main:
        network.eval()
        save_model(
            out / f"{model_name}.pt", network, task.kind, task.geometry, task.view,
            training={"data": task.training_data(), **recorded, **summary}, git_revision=_git_revision(),
        )
        write_log(out / "log.csv", rows)
        write_loss_plot(out / "loss.png", rows, f"{task.kind} training")
        write_json(out / "summary.json", summary)
    return summary


def _out_of_time(optim: OptimSettings, step: int, steps_this_run: int, elapsed_s: float, loop_s: float) -> bool:
    """Stop when the budget is spent, or at the end of a learning-rate cycle (the rate at its
    low end, where the weights are best) when the next whole cycle would not fit."""
    if optim.max_minutes is None:
        return False
    budget_s = 60.0 * optim.max_minutes
    if elapsed_s >= budget_s:
        return True
    seconds_per_step = loop_s / max(steps_this_run, 1)
    return step % optim.lr_cycle_steps == 0 and elapsed_s + optim.lr_cycle_steps * seconds_per_step > budget_s


def _schedule(optim: OptimSettings) -> dict:
    """The settings a resumed run must share (the step count and time budget may change)."""
    recorded = asdict(optim)
    for key in ("steps", "max_minutes", "checkpoint_every", "log_every"):
        recorded.pop(key)
    return recorded


def _start_from(network: nn.Module, kind: str, path: Path) -> dict:
    """Copy a saved model's weights into ``network``; ``{"file", "sha256"}`` of what was used."""
    from ..nets.model_file import load_model

    loaded = load_model(path)
    if loaded.kind != kind:
        raise InputError(f"initial weights: {path} holds a {loaded.kind!r} network; this training is for {kind!r}")
    free = getattr(network.config, "WEIGHT_FREE_FIELDS", ())  # what the training does with the weights, not their shapes
    given = {key: value for key, value in loaded.network.config.to_dict().items() if key not in free}
    expected = {key: value for key, value in network.config.to_dict().items() if key not in free}
    if given != expected:
        differing = sorted(key for key, value in expected.items() if given.get(key) != value)
        raise InputError(f"initial weights: {path} has another configuration ({', '.join(differing)}); expected {expected}")
    network.load_state_dict(loaded.network.state_dict())
    return {"file": loaded.path.name, "sha256": loaded.metadata["sha256"]}


def _save_checkpoint(path, recorded, network, optimizer, generator, step, seconds, context) -> None:
    states = context.gather(generator.get_state())
    if not context.is_main:
        return
    state = {
        "format": "sopi-checkpoint-1", "recorded": recorded, "step": step, "seconds": seconds,
        "model": network.state_dict(), "optimizer": optimizer.state_dict(), "generators": states,
    }
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def _restore(path, recorded, network, optimizer, generator, context) -> tuple[int, float]:
    if not path.is_file():
        raise InputError(f"--resume: {path} does not exist")
    state = load_weights(path, "--resume", "a SOPI training checkpoint")
    if not isinstance(state, dict) or state.get("format") != "sopi-checkpoint-1":
        raise InputError(f"--resume: {path} is not a SOPI training checkpoint")
    if state["recorded"] != recorded:
        differing = sorted(k for k in recorded if state["recorded"].get(k) != recorded[k])
        raise InputError(f"--resume: {path} was made with different settings ({', '.join(differing)}); use the same options or a new --out")
    if len(state["generators"]) != context.world_size:
        raise InputError(f"--resume: {path} was made by {len(state['generators'])} processes, this run has {context.world_size}")
    network.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generators"][context.rank])
    return int(state["step"]), float(state["seconds"])


def _parameter_checksum(network: nn.Module) -> str:
    import hashlib

    digest = hashlib.sha256()
    for value in network.state_dict().values():
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _git_revision() -> str:
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def _hardware(context: DistContext) -> str:
    if context.device.type == "cuda":
        return f"{context.world_size} x {torch.cuda.get_device_name(context.device)}"
    return f"{context.world_size} process(es) on {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads each"
