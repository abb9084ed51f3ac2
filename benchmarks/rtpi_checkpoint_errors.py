"""Per-parameter RTPI errors of a training checkpoint (or model) on fixed, augmented poses.

Draws ``--cases`` poses from the training protocol with ``--seed`` (1234 by default,
a stream the training does not start from), renders them from the sample CT exactly as
training does (same projector, same augmentation), and prints the mean and median
absolute error of each parameter next to the error of predicting the nominal view.
The model card's training table was measured with it.

Usage::

    .venv/bin/python benchmarks/rtpi_checkpoint_errors.py RUN/checkpoint.pt [--cases 64] [--seed 1234] [--step-mm 2]
"""

from __future__ import annotations

import argparse

import torch

from sopi.geometry import CArmGeometry
from sopi.nets.rtpi import RTPI, RTPIConfig
from sopi.sample_data import sample_ct_path, sample_vertebrae_path
from sopi.training.augmentation import AugmentSettings, augment_xrays
from sopi.training.distributed import DistContext
from sopi.training.rtpi import RTPISettings, RTPITask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint.pt written by sopi train rtpi")
    parser.add_argument("--cases", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--step-mm", type=float, help="ray step of the test renders (default: the training's)")
    args = parser.parse_args()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    recorded = state["recorded"]
    config = RTPIConfig.from_dict(recorded["config"])
    network = RTPI(config)
    network.load_state_dict(state["model"])
    network.eval()
    task_settings = dict(recorded["task"])
    augment = AugmentSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in task_settings.pop("augment").items()})
    if args.step_mm is not None:
        task_settings["step_mm"] = args.step_mm
    settings = RTPISettings(**task_settings, augment=augment)
    task = RTPITask([(sample_ct_path(), sample_vertebrae_path())], CArmGeometry.preset("perlove-plx118f"), config, settings, DistContext())
    case = task.cases[0]
    generator = torch.Generator().manual_seed(args.seed)
    theta = task.protocol.sample(args.cases, generator)
    with torch.no_grad():
        channels = case.projector(case.nominal.pose(theta))
        xray = augment_xrays(channels, generator, settings.augment)[:, None]
        predicted = network(case.cube, xray).double()
    errors = (predicted - theta).abs()
    names = ("rx", "ry", "rz", "tx", "ty", "tz")
    print(f"step {state['step']}, {args.cases} poses, seed {args.seed}")
    print("| | " + " | ".join(names) + " |\n|---|" + "---|" * 6)
    print("| mean abs error | " + " | ".join(f"{v:.2f}" for v in errors.mean(0).tolist()) + " |")
    print("| median abs error | " + " | ".join(f"{v:.2f}" for v in errors.median(0).values.tolist()) + " |")
    print("| nominal view (mean) | " + " | ".join(f"{v:.2f}" for v in theta.abs().mean(0).tolist()) + " |")


if __name__ == "__main__":
    main()
