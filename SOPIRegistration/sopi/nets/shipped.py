"""The networks shipped in ``Resources/Models`` and whether a model was trained on a given CT."""

from __future__ import annotations

import json
from pathlib import Path

from ..volume import Volume

__all__ = ["PRETRAINED_MODELS", "SHIPPED_MODELS", "other_ct_warning", "pretrained_model", "shipped_model"]

_MODELS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models"
#: The default model file of each kind (trained for the bundled sample CT; see their model cards).
SHIPPED_MODELS = {"rtpi": _MODELS_DIR / "rtpi_sample_ct.pt", "fine": _MODELS_DIR / "fine_sample_ct.pt"}


#: The starting point of ``sopi prepare`` for a new CT: the shipped models trained on several
#: CTs and their anatomical variants (see their model cards).
PRETRAINED_MODELS = {"rtpi": _MODELS_DIR / "rtpi_population.pt", "fine": _MODELS_DIR / "fine_population.pt"}


def _installed(path: Path | None) -> Path | None:
    return path if path is not None and path.is_file() and path.with_suffix(".json").is_file() else None


def shipped_model(kind: str) -> Path | None:
    """The shipped model file of ``kind`` (``rtpi`` or ``fine``), or None where it is not installed."""
    return _installed(SHIPPED_MODELS.get(kind))


def pretrained_model(kind: str) -> Path | None:
    """The model ``sopi prepare`` fine-tunes for a new CT: the population model of ``kind``,
    else the sample-CT one, else None where neither is installed."""
    return _installed(PRETRAINED_MODELS.get(kind)) or shipped_model(kind)


def other_ct_warning(model_path: str | Path, ct: Volume, kind: str = "") -> str | None:
    """A warning when the model's training record does not list ``ct`` (by voxel fingerprint); else None."""
    from ..training.cases import voxel_fingerprint

    path = Path(model_path)
    try:
        data = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["training"]["data"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return f"{path.name}: no training record; cannot tell which CT it was trained on"
    if voxel_fingerprint(ct) in {entry.get("voxels_sha256") for entry in data}:
        return None
    label = f" ({kind})" if kind else ""
    return (
        f"{path.name}{label} was trained on another CT; prepare a model for this CT "
        "('Prepare model for this CT' in Slicer) or use a classical method (opt)"
    )
