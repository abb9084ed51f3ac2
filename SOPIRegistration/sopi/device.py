"""Choosing the torch device from a user's ``auto`` / ``cpu`` / ``cuda``."""

from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise InputError(f"--device: expected auto, cpu or cuda, got {name!r}")
    return torch.device(name)
