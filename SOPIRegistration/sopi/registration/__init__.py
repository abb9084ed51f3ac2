"""Intensity-based 2D/3D registration: the objective, optimisers, named methods and ``register()``."""

from .api import RegistrationResult, load_networks, register
from .methods import METHODS, Stage, get_method

__all__ = ["METHODS", "RegistrationResult", "Stage", "get_method", "load_networks", "register"]
