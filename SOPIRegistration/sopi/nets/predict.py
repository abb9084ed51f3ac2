"""Pose from a trained RTPI model: prepare its two inputs and run one forward pass."""

from __future__ import annotations

import warnings

import torch

from ..errors import InputError
from ..geometry import CArmGeometry, NominalView
from ..volume import Volume
from .inputs import ct_cube, network_image
from .model_file import LoadedModel

__all__ = ["check_geometry", "rtpi_theta"]


def check_geometry(model: LoadedModel, geometry: CArmGeometry, tolerance: float = 0.02) -> None:
    """Warn when the X-ray's C-arm differs from the one the model was trained for
    (source-to-detector distance or detector extent off by more than ``tolerance``)."""
    trained = model.geometry
    pairs = {
        "source-to-detector distance (mm)": (trained.sdd_mm, geometry.sdd_mm),
        "source-to-isocentre distance (mm)": (trained.source_to_isocenter_mm, geometry.source_to_isocenter_mm),
        "detector width (mm)": (trained.cols * trained.pixel_spacing_mm[0], geometry.cols * geometry.pixel_spacing_mm[0]),
        "detector height (mm)": (trained.rows * trained.pixel_spacing_mm[1], geometry.rows * geometry.pixel_spacing_mm[1]),
    }
    for name, (expected, actual) in pairs.items():
        if abs(actual - expected) > tolerance * abs(expected):
            warnings.warn(
                f"{model.path.name}: trained for a {name} of {expected:.1f}, the X-ray has {actual:.1f}; its poses may be off",
                stacklevel=3,
            )


def rtpi_theta(model: LoadedModel, attenuation: Volume, spine: Volume, view: NominalView, xray: torch.Tensor) -> torch.Tensor:
    """``(6,)`` float64 theta (deg, mm) of ``xray`` relative to ``view`` (whose isocentre is the spine centroid).

    Args:
        attenuation: the CT as linear attenuation (1/mm).
        spine: spine mask on the CT grid.
        xray: ``(rows, cols)`` image in attenuation polarity (bone bright).
    """
    if model.kind != "rtpi":
        raise InputError(f"{model.path}: expected an RTPI model, got kind {model.kind!r}")
    network = model.network
    config = network.config
    device = next(network.parameters()).device
    cube = ct_cube(attenuation, view, config.ct_size, config.ct_side_mm, mask=spine)[None].to(device)
    image = network_image(xray, config.xray_size)
    with torch.no_grad():
        theta = network(cube, image[None, None].to(device))[0]
    return theta.to(torch.float64).cpu()
