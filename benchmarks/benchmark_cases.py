"""The benchmark's simulated cases, for the scripts in this folder: a CT, its spine, the C-arm, the
nominal start about the spine's centroid, the target points and the X-rays, as ``sopi benchmark`` makes them."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SOPIRegistration"))

from sopi.benchmark import target_points  # noqa: E402
from sopi.geometry import CArmGeometry, NominalView, nominal_view  # noqa: E402
from sopi.io import read_ct, read_mask  # noqa: E402
from sopi.segment import mask_centroid_world  # noqa: E402
from sopi.simulate import simulate_cases  # noqa: E402
from sopi.volume import Volume  # noqa: E402


@dataclass
class Cases:
    """``thetas`` (N, 6) about ``nominal``; ``images`` (N, rows, cols); ``draws`` the realism records."""

    ct: Volume
    spine: Volume
    geometry: CArmGeometry
    nominal: NominalView
    points: torch.Tensor
    thetas: torch.Tensor
    images: torch.Tensor
    draws: list[dict]


def simulated(ct_path: str | Path, mask_path: str | Path, protocol: str, cases: int, seed: int, realistic: bool) -> Cases:
    """The first ``cases`` cases of ``sopi benchmark --protocol protocol --seed seed [--realistic]`` (paper C-arm)."""
    ct = read_ct(ct_path)
    spine = read_mask(mask_path, ct)
    geometry = CArmGeometry.preset("perlove-plx118f")
    nominal = nominal_view("ap", mask_centroid_world(spine), geometry.source_to_isocenter_mm)
    thetas, images, draws = simulate_cases(ct, nominal, geometry, protocol, cases, seed, realistic, "cpu", spine=spine)
    return Cases(ct, spine, geometry, nominal, target_points(spine), thetas, images, draws)
