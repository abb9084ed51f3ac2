"""Pose-sampling protocols, stated in the paper's parameters ``theta`` (deg, mm).

A protocol draws the offset of the true pose from the nominal view. Spreads are
standard deviations of independent normal distributions per component
``(rx, ry, rz, tx, ty, tz)``; ``tx, ty`` are in the detector plane, ``tz`` is depth.

* ``paper``: sized so the summed per-axis errors of the nominal view match the
  paper's "Initial" row (6.40 deg, 15.08 mm): for ``x ~ N(0, s)``,
  ``E|x| = s sqrt(2 / pi)``, so three axes sum to ``2.394 s`` on average, giving
  ``s = 2.67 deg`` and ``6.30 mm``.
* ``wide``: the RTPI training distribution: rotation N(0, 20 deg) per axis (the
  paper's); in-plane translation N(0, 15 mm) and depth N(0, 30 mm), which keep the
  lumbar spine inside the paper's detector (about 136 mm wide at the isocentre).
* ``far``: the plausible range a new patient's X-ray may come from (issue 13): the X-ray's
  isocentre at a spine voxel drawn uniformly from the middle 60 % of the spine's
  head-to-foot extent (``along_spine``: the start, about the spine's centroid, does not know
  which part of the spine was imaged), then rotations uniform in +-30 deg per axis, in-plane
  translations uniform in +-20 mm and depth uniform in +-100 mm. The start is thus off by up
  to the spine's half-length along it and by a few centimetres across it. A first version
  drew in-plane shifts of +-60 mm from anywhere on the spine; most of its realistic X-rays
  showed the spine only at the edge of the field or the CT's cut end (docs/benchmarks.md),
  which is not how an X-ray of the spine is aimed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InputError

__all__ = ["PROTOCOLS", "Protocol", "get_protocol"]


@dataclass(frozen=True)
class Protocol:
    """Independent offsets of ``theta``: normal with the given standard deviations, or uniform
    within +- the given values (``distribution="uniform"``).

    ``along_spine`` > 0: the offsets are about a spine voxel drawn uniformly from that central
    fraction of the spine's head-to-foot extent, not about the spine's centroid (see
    :func:`sopi.benchmark.simulate_cases`).
    """

    name: str
    rotation_sd_deg: tuple[float, float, float]
    translation_sd_mm: tuple[float, float, float]
    distribution: str = "normal"
    along_spine: float = 0.0  # > 0: about spine voxels in this central fraction of the spine's head-to-foot extent

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``(count, 6)`` float64 offsets ``theta`` (deg, mm)."""
        spread = torch.tensor([*self.rotation_sd_deg, *self.translation_sd_mm], dtype=torch.float64)
        if self.distribution == "uniform":
            return (torch.rand(count, 6, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * spread
        return torch.randn(count, 6, generator=generator, dtype=torch.float64) * spread


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol("paper", (2.67, 2.67, 2.67), (6.30, 6.30, 6.30)),
    "wide": Protocol("wide", (20.0, 20.0, 20.0), (15.0, 15.0, 30.0)),
    "far": Protocol("far", (30.0, 30.0, 30.0), (20.0, 20.0, 100.0), distribution="uniform", along_spine=0.6),
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a clear error otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise InputError(f"unknown protocol {name!r}; expected one of {sorted(PROTOCOLS)}") from None
