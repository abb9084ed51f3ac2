"""Trained models on disk: ``NAME.pt`` (a ``state_dict``) beside ``NAME.json`` (everything else).

The JSON records the network kind and configuration, the C-arm geometry and nominal
view it was trained for, the training data and settings, the git revision and the
SHA-256 of ``NAME.pt``. Loading checks the checksum before anything is unpickled, then
reads the weights with ``torch.load(..., weights_only=True)`` and refuses a state that
does not match the configuration. Both files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_path, write_json
from ..errors import InputError
from ..geometry import CArmGeometry

__all__ = ["LoadedModel", "existing_model_paths", "load_model", "model_paths", "save_model", "sha256_of"]

#: Network kinds a model file may hold (built by ``_build``).
_KINDS = {"rtpi", "fine"}


@dataclass
class LoadedModel:
    """A network in eval mode and the metadata it was saved with."""

    kind: str
    network: nn.Module
    geometry: CArmGeometry
    view: str
    metadata: dict
    path: Path


def model_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights .pt, metadata .json)`` for a path naming either file (or their common stem)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".pt", ".json") else path
    return stem.with_suffix(".pt"), stem.with_suffix(".json")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(path: str | Path, network: nn.Module, kind: str, geometry: CArmGeometry, view: str, **metadata) -> Path:
    """Write ``network``'s weights and metadata; returns the ``.pt`` path."""
    weights_path, json_path = model_paths(path)
    state = {key: value.detach().cpu().clone() for key, value in network.state_dict().items()}
    with atomic_path(weights_path) as temporary:
        torch.save(state, temporary)
        checksum = sha256_of(Path(temporary))
    write_json(json_path, {
        "format": "sopi-model-1", "kind": kind, "config": network.config.to_dict(), "geometry": geometry.to_dict(),
        "view": view, "weights": weights_path.name, "sha256": checksum, **metadata,
    })
    return weights_path


def existing_model_paths(path: str | Path, role: str = "model") -> tuple[Path, Path]:
    """:func:`model_paths`, with an :class:`InputError` naming ``role`` and the file where either is missing."""
    weights_path, json_path = model_paths(path)
    for required in (weights_path, json_path):
        if not required.is_file():
            raise InputError(f"{role}: {required} does not exist (a model is NAME.pt with NAME.json beside it)")
    return weights_path, json_path


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a model saved by :func:`save_model`; a clear :class:`InputError` for anything wrong."""
    weights_path, json_path = existing_model_paths(path)
    try:
        metadata = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"model: {json_path} is not valid JSON ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != "sopi-model-1":
        raise InputError(f"model: {json_path} is not a SOPI model description (expected format 'sopi-model-1')")
    kind = metadata.get("kind")
    if kind not in _KINDS:
        raise InputError(f"model: {json_path} has kind {kind!r}; expected one of {sorted(_KINDS)}")
    for key in ("config", "geometry", "view", "sha256"):
        if key not in metadata:
            raise InputError(f"model: {json_path} lacks the field {key!r}")
    checksum = sha256_of(weights_path)
    if checksum != metadata["sha256"]:
        raise InputError(
            f"model: {weights_path} has SHA-256 {checksum[:12]}..., but {json_path.name} records {str(metadata['sha256'])[:12]}...; "
            "the weights were modified or corrupted"
        )
    network = _build(kind, metadata["config"], json_path)
    state = load_weights(weights_path, "model", "a SOPIRegistration model file")
    try:
        network.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"model: {weights_path} does not match the configuration in {json_path.name}: {first_line}") from None
    geometry = CArmGeometry.from_dict(metadata["geometry"], source=f"{json_path} geometry")
    network.requires_grad_(False)  # inference: gradients flow to poses, never into the weights
    return LoadedModel(kind, network.to(device).eval(), geometry, str(metadata["view"]), metadata, weights_path)


def load_weights(path: Path, field: str, expected: str) -> object:
    """``torch.load(path, weights_only=True)`` with one-line errors naming ``field`` and ``path``.

    A file that would need to run code to load (a pickle of objects, not tensors) is
    refused and said so; PyTorch's advice to load it with ``weights_only=False`` is not
    repeated, since following it would run whatever code the file holds.
    """
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" in str(error).lower():  # the unpickler met a reference to a function or class
            raise InputError(f"{field}: {path} is not {expected} (it asks to run code on loading; refused)") from None
        raise InputError(f"{field}: {path} is not {expected} (damaged or not a PyTorch file)") from None
    except Exception as error:  # noqa: BLE001 - any other failure is a damaged or foreign file
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise InputError(f"{field}: {path} is not {expected} ({first_line})") from None


def _build(kind: str, config: dict, source: Path) -> nn.Module:
    if not isinstance(config, dict):
        raise InputError(f"model: {source} config must be an object")
    if kind == "rtpi":
        from .rtpi import RTPI, RTPIConfig

        return RTPI(RTPIConfig.from_dict(config, source=f"{source} config"))
    if kind == "fine":
        from .encoder import EncoderConfig, FineNet

        return FineNet(EncoderConfig.from_dict(config, source=f"{source} config"))
    raise InputError(f"model: unknown kind {kind!r}")  # pragma: no cover - _KINDS guards it
