"""Patient-specific models in one call: what the Slicer module's "Prepare model for this CT" runs.

The recipe (architecture, losses, augmentation, optimiser and learning rates) is read from
a reference model's JSON, by default the shipped sample-CT models, so a new CT gets the
same training that produced them, for a wall-time budget instead of a step count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..geometry import CArmGeometry
from ..volume import Volume
from .augmentation import _tuples

__all__ = ["patient_model_path", "train_patient_models", "training_recipe"]

_MAX_STEPS = 10**7  # the time budget stops training first


def training_recipe(reference: Path, kind: str) -> dict:
    """The architecture, task settings and optimiser of the saved ``kind`` model ``reference`` (its JSON)."""
    from ..nets.model_file import existing_model_paths

    _, json_path = existing_model_paths(reference, f"the {kind} model")
    try:
        metadata = json.loads(json_path.read_text(encoding="utf-8"))
        recipe = {"kind": metadata["kind"], "config": metadata["config"], "task": metadata["training"]["task"], "optim": metadata["training"]["optim"]}
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise InputError(f"{json_path}: not a trained model description to copy the recipe from ({error})") from None
    if recipe["kind"] != kind:
        raise InputError(f"{reference}: holds a {recipe['kind']!r} network; expected the {kind!r} one here")
    return recipe


def patient_model_path(out_dir: str | Path, kind: str, name: str) -> Path:
    """Where :func:`train_patient_models` writes the ``kind`` model named ``name``: ``out_dir/KIND/KIND_NAME.pt``."""
    return Path(out_dir) / kind / f"{kind}_{name}.pt"


def _task_factory(kind: str, recipe: dict, ct: Volume, mask: Volume, geometry: CArmGeometry):
    pairs = [(ct, mask)]
    if kind == "rtpi":
        from ..nets.rtpi import RTPIConfig
        from .rtpi import RTPISettings, RTPITask

        config, settings = RTPIConfig(**_tuples(recipe["config"])), RTPISettings.from_dict(recipe["task"])
        return lambda context: RTPITask(pairs, geometry, config, settings, context)
    from ..nets.encoder import EncoderConfig
    from .fine import FineSettings, FineTask

    config, settings = EncoderConfig(**recipe["config"]), FineSettings.from_dict(recipe["task"])
    return lambda context: FineTask(pairs, geometry, config, settings, context)


def train_patient_models(
    ct: Volume,
    mask: Volume,
    geometry: CArmGeometry,
    out_dir: str | Path,
    *,
    minutes: float = 30.0,
    name: str = "patient",
    references: dict[str, str | Path] | None = None,
    initial: dict[str, str | Path] | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict[str, Path]:
    """Train RTPI, then the fine module, on one CT and its spine mask; each gets half of ``minutes``.

    ``references`` name the models whose recipe is copied (default: the shipped ones);
    ``initial`` the models each network starts from (fine-tuning; default: a random start).
    Returns ``{"rtpi": out_dir/rtpi/rtpi_NAME.pt, "fine": out_dir/fine/fine_NAME.pt}``; each
    folder also keeps the run's checkpoint, log and loss plot. ``progress``
    reports the fraction of the time budget spent.
    """
    from ..sample_data import sample_fine_model_path, sample_rtpi_model_path
    from .trainer import OptimSettings, train

    if not minutes > 0:
        raise InputError(f"training time must be positive minutes, got {minutes}")
    references = references or {"rtpi": sample_rtpi_model_path(), "fine": sample_fine_model_path()}
    out = Path(out_dir)
    outputs: dict[str, Path] = {}
    for index, kind in enumerate(("rtpi", "fine")):
        recipe = training_recipe(Path(references[kind]), kind)
        optim = OptimSettings(steps=_MAX_STEPS, max_minutes=minutes / 2, **{**recipe["optim"], "seed": seed})
        started = time.perf_counter()

        def report(fraction: float, _message: str, index=index, started=started, label=kind) -> None:
            if progress is not None:  # the trainer's fraction counts steps of _MAX_STEPS; show time spent instead
                spent = min(1.0, (time.perf_counter() - started) / (30.0 * minutes))
                progress((index + spent) / 2, f"Training {label.upper()}: step {round(fraction * _MAX_STEPS)}")

        train(_task_factory(kind, recipe, ct, mask, geometry), out / kind, optim, model_name=f"{kind}_{name}",
              initial_weights=(initial or {}).get(kind), device=device, progress=report, cancel=cancel)
        outputs[kind] = patient_model_path(out, kind, name)
    if progress is not None:
        progress(1.0, "Models ready")
    return outputs
