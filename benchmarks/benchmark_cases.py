"""The benchmark's simulated cases, for the scripts in this folder: a CT, its spine, the C-arm, the
nominal start about the spine's centroid, the target points and the X-rays, as ``sopi benchmark`` makes them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
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
class Scene:
    """A CT with its spine, the paper's C-arm and the nominal AP start about the spine's centroid."""

    ct: Volume
    spine: Volume
    geometry: CArmGeometry
    nominal: NominalView

    @classmethod
    def read(cls, ct_path: str | Path, mask_path: str | Path) -> "Scene":
        ct = read_ct(ct_path)
        spine = read_mask(mask_path, ct)
        geometry = CArmGeometry.preset("perlove-plx118f")
        return cls(ct, spine, geometry, nominal_view("ap", mask_centroid_world(spine), geometry.source_to_isocenter_mm))

    def cases(self, protocol: str, cases: int, seed: int, realistic: bool) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
        """``(thetas, images, draws)``: the first ``cases`` of ``sopi benchmark --protocol protocol --seed seed``."""
        return simulate_cases(self.ct, self.nominal, self.geometry, protocol, cases, seed, realistic, "cpu", spine=self.spine)


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
    scene = Scene.read(ct_path, mask_path)
    thetas, images, draws = scene.cases(protocol, cases, seed, realistic)
    return Cases(scene.ct, scene.spine, scene.geometry, scene.nominal, target_points(scene.spine), thetas, images, draws)


def add_realistic_set_arguments(parser: argparse.ArgumentParser) -> None:
    """``CT MASK [CT MASK ...] --protocols --seeds --cases``: the realistic X-rays :func:`realistic_sets` walks."""
    parser.add_argument("pairs", nargs="+", help="CT MASK [CT MASK ...]")
    parser.add_argument("--protocols", default="paper,far")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--cases", type=int, default=10)


def scenes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Iterator[tuple[str, Scene]]:
    """``(CT path, Scene)`` for each ``CT MASK`` pair of ``args.pairs`` (a usage error when they do not pair up)."""
    if len(args.pairs) % 2:
        parser.error("expected CT MASK pairs")
    for ct_path, mask_path in zip(args.pairs[::2], args.pairs[1::2]):
        yield ct_path, Scene.read(ct_path, mask_path)


def realistic_sets(scene: Scene, args: argparse.Namespace, realistic: bool = True) -> Iterator[tuple[str, int, torch.Tensor, list[dict]]]:
    """``(protocol, seed, images, draws)``: the realistic benchmark X-rays of every protocol and seed in ``args``
    (with ``realistic=False``, the clean DRRs of the same poses)."""
    for protocol in args.protocols.split(","):
        for seed in (int(value) for value in args.seeds.split(",")):
            _, images, draws = scene.cases(protocol, args.cases, seed, realistic)
            yield protocol, seed, images, draws
