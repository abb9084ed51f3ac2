"""``sopi train rtpi | fine``: the command line of the training loop (also under ``torchrun``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..nets.encoder import MOVING_IMAGES
from ..nets.fine_loss import FINE_LOSSES
from ..validate import check_outputs, nonnegative_number, positive_int, positive_number, seed

__all__ = ["add_train_parser"]


def add_train_parser(commands) -> None:
    """Add ``train`` with its ``rtpi`` and ``fine`` sub-commands to the ``sopi`` parser."""
    from ..cli import _add_geometry_options

    trainer = commands.add_parser("train", help="train a network", description="Train a network on poses simulated online from CTs.")
    networks = trainer.add_subparsers(dest="network", required=True, metavar="NETWORK")
    rtpi = networks.add_parser(
        "rtpi", help="the RTPI pose-initialisation network",
        description="Train RTPI (paper eq. 5) on one CT (patient-specific) or many (population). "
        "Scale out with: torchrun --nproc_per_node=N -m sopi train rtpi ...",
    )
    _common_options(rtpi, name="rtpi", batch_size=16, base_lr=1e-3, max_lr=1e-2, step_mm=2.0)
    rtpi.add_argument("--alpha", type=nonnegative_number, default=1.0, help="weight of the gradient-difference term (default 1)")
    rtpi.add_argument("--beta", type=nonnegative_number, default=1.0, help="weight of the parameter MSE (default 1)")
    rtpi.add_argument("--lam", type=nonnegative_number, default=0.01, help="weight of the L2 regulariser (default 0.01)")
    rtpi.add_argument("--protocol", default="wide", help="pose distribution (default wide)")
    rtpi.add_argument("--xray-size", type=positive_int, default=64, help="X-ray input edge in pixels (default 64)")
    rtpi.add_argument("--ct-size", type=positive_int, default=64, help="CT cube edge in voxels (default 64)")
    rtpi.add_argument("--width", type=positive_int, default=32, help="2D branch channels (default 32)")
    _add_geometry_options(rtpi, default_preset="perlove-plx118f")
    rtpi.set_defaults(run=_cmd_train_rtpi)

    fine = networks.add_parser(
        "fine", help="the fine-registration encoders (SOPI)",
        description="Train the two composite encoders with the double-backward direction loss (paper eq. 7). "
        "Scale out with: torchrun --nproc_per_node=N -m sopi train fine ...",
    )
    _common_options(fine, name="fine", batch_size=4, base_lr=1e-4, max_lr=1e-3, step_mm=3.0)
    fine.add_argument("--image-size", type=positive_int, default=64, help="detector edge the module renders at (default 64)")
    fine.add_argument("--width", type=positive_int, default=16, help="stem channels (default 16)")
    fine.add_argument("--branch-width", type=positive_int, default=32, help="channels of both branches (default 32)")
    fine.add_argument("--embed-channels", type=positive_int, default=32, help="C of the embedded features (default 32)")
    fine.add_argument("--no-composite", action="store_true", help="plain branches without composite connections (ablation)")
    fine.add_argument("--no-mask", action="store_true", help="L_N over every cell instead of the projected spine (ablation)")
    fine.add_argument(
        "--moving-image", choices=MOVING_IMAGES, default="spine",
        help="the moving DRR: spine = the spine-only CT (the paper's V_seg, default); ct = the whole CT, as the X-ray shows it",
    )
    fine.add_argument(
        "--loss", choices=tuple(FINE_LOSSES), default="direction",
        help="direction = the paper's eq. 7 (default); axis-sign = the sign of the pose gradient on each axis, every axis alike",
    )
    fine.add_argument("--target-sd", type=nonnegative_number, nargs=2, default=(20.0, 20.0), metavar=("DEG", "MM"), help="spread of target poses")
    fine.add_argument("--offset-sd", type=nonnegative_number, nargs=2, default=(20.0, 20.0), metavar=("DEG", "MM"), help="spread of start-to-target offsets")
    fine.add_argument(
        "--one-axis-fraction", type=float, default=0.0, metavar="F",
        help="share of pairs offset along one random axis only, in [0, 1] (default 0: every axis, as the paper)",
    )
    _add_geometry_options(fine, default_preset="perlove-plx118f")
    fine.set_defaults(run=_cmd_train_fine)


def _common_options(parser: argparse.ArgumentParser, name: str, batch_size: int, base_lr: float, max_lr: float, step_mm: float) -> None:
    data = parser.add_argument_group("training data (give --ct/--mask pairs or --data)")
    data.add_argument("--ct", type=Path, action="append", help="CT file or DICOM folder (repeat for several)")
    data.add_argument("--mask", type=Path, action="append", help="its spine mask or label map (repeat, one per --ct)")
    data.add_argument("--data", type=Path, help="CSV with columns ct,mask, or a folder of sub-folders with ct.* and mask.*")
    data.add_argument(
        "--anatomical-variants", type=int, default=0, metavar="N",
        help="also train on N warped copies of every CT (affine, elastic, resampling, crop, HU; sopi.training.anatomy), seeded by --seed",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (model, checkpoint, log.csv, loss.png)")
    parser.add_argument("--name", default=name, help=f"model file name without extension (default {name})")
    parser.add_argument("--steps", type=positive_int, default=2000, help="training steps (default 2000)")
    parser.add_argument("--max-minutes", type=positive_number, help="wall-time budget: stop and save at the last learning-rate cycle end that fits")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size, help=f"(default {batch_size}, the paper's)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="sgd (momentum 0.9, the paper's) or adam")
    parser.add_argument("--base-lr", type=positive_number, default=base_lr, help=f"cyclic learning rate low end (default {base_lr:g})")
    parser.add_argument("--max-lr", type=positive_number, default=max_lr, help=f"cyclic learning rate high end (default {max_lr:g})")
    parser.add_argument("--view", choices=("ap", "lateral"), default="ap")
    parser.add_argument("--step-mm", type=positive_number, default=step_mm, help=f"ray-marching step of training renders (default {step_mm:g})")
    parser.add_argument("--no-augment", action="store_true", help="train on clean DRRs")
    parser.add_argument("--checkpoint-every", type=positive_int, default=100)
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out/checkpoint.pt")
    parser.add_argument(
        "--init", type=Path, metavar="MODEL",
        help="start from this model's weights (same network and configuration), e.g. to pretrain from a shipped model",
    )
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace, task_factory) -> int:
    from ..cli import _progress_bar
    from .trainer import OptimSettings, train

    optim = OptimSettings(
        steps=args.steps, optimizer=args.optimizer, base_lr=args.base_lr, max_lr=args.max_lr, seed=args.seed,
        max_minutes=args.max_minutes, checkpoint_every=args.checkpoint_every,
    )
    inputs = {f"--ct {index + 1}": path for index, path in enumerate(args.ct or [])}
    inputs.update({f"--mask {index + 1}": path for index, path in enumerate(args.mask or [])})
    check_outputs({"--out": args.out, "--out/--name": args.out / f"{args.name}.pt"},
                  {**inputs, "--data": args.data, "--init": args.init}, folders=("--out",))
    rank = int(os.environ.get("RANK", "0"))
    with _progress_bar(f"sopi train {args.network}", args.quiet or rank != 0) as progress:
        summary = train(task_factory, args.out, optim, model_name=args.name, resume=args.resume,
                        initial_weights=args.init, device=args.device, progress=progress)
    if rank == 0:
        print(f"wrote {args.out / (args.name + '.pt')} ({summary['steps_done']} steps, {summary['train_time_s']:.0f} s)")
    return 0


def _pairs(args: argparse.Namespace):
    from ..errors import InputError
    from .cases import case_pairs, read_case_list

    pairs = read_case_list(args.data) if args.data else case_pairs(args.ct or [], args.mask or [])
    if args.anatomical_variants < 0:
        raise InputError(f"--anatomical-variants: expected 0 or more, got {args.anatomical_variants}")
    if args.anatomical_variants == 0:
        return pairs
    from ..io import read_ct, read_label_map
    from .anatomy import anatomical_variants

    expanded = []
    for index, (ct_path, mask_path) in enumerate(pairs):
        ct = read_ct(ct_path)
        labels = read_label_map(mask_path, reference=ct)
        expanded += [(ct, labels), *anatomical_variants(ct, labels, args.anatomical_variants, seed=args.seed * 1000 + index)]
    return expanded


def _cmd_train_rtpi(args: argparse.Namespace) -> int:
    from ..cli import _geometry
    from ..nets.rtpi import RTPIConfig
    from .augmentation import AugmentSettings
    from .rtpi import RTPISettings, RTPITask

    pairs, geometry = _pairs(args), _geometry(args)
    config = RTPIConfig(xray_size=args.xray_size, ct_size=args.ct_size, width=args.width, local_widths=(2 * args.width, 4 * args.width))
    settings = RTPISettings(
        batch_size=args.batch_size, alpha=args.alpha, beta=args.beta, lam=args.lam, protocol=args.protocol, view=args.view,
        step_mm=args.step_mm, augment=AugmentSettings(enabled=not args.no_augment),
    )
    return _run(args, lambda context: RTPITask(pairs, geometry, config, settings, context))


def _cmd_train_fine(args: argparse.Namespace) -> int:
    from ..cli import _geometry
    from ..nets.encoder import EncoderConfig
    from .augmentation import AugmentSettings
    from .fine import FineSettings, FineTask

    pairs, geometry = _pairs(args), _geometry(args)
    config = EncoderConfig(
        image_size=args.image_size, width=args.width, branch_width=args.branch_width, embed_channels=args.embed_channels,
        composite=not args.no_composite, masked_loss=not args.no_mask, moving_image=args.moving_image,
    )
    settings = FineSettings(
        batch_size=args.batch_size, target_sd=tuple(args.target_sd), offset_sd=tuple(args.offset_sd), view=args.view,
        step_mm=args.step_mm, augment=AugmentSettings(enabled=not args.no_augment), loss=args.loss,
        one_axis_fraction=args.one_axis_fraction,
    )
    return _run(args, lambda context: FineTask(pairs, geometry, config, settings, context))
