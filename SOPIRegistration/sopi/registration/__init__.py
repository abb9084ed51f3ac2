"""Intensity-based 2D/3D registration: the objective, optimisers, named methods, ``register()`` and ``register_views()`` (several X-rays)."""

from .api import RegistrationResult, load_networks, register
from .methods import METHODS, Stage, get_method
from .multiview import MultiViewResult, register_views

__all__ = ["METHODS", "MultiViewResult", "RegistrationResult", "Stage", "get_method", "load_networks", "register", "register_views"]
