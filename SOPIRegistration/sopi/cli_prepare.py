"""``sopi prepare CT --out DIR``: networks fine-tuned for one CT (:mod:`sopi.training.prepare`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import InputError
from .validate import check_ct_content, check_outputs, positive_number, seed

__all__ = ["add_prepare_parser", "models_from_folder"]


def add_prepare_parser(commands) -> None:
    """Add ``sopi prepare`` to the ``sopi`` subcommands."""
    from .geometry import PRESETS

    prepare = commands.add_parser(
        "prepare", help="fine-tune the networks for one CT (a few minutes)",
        description="Segment the spine (unless --mask is given) and fine-tune RTPI and the fine module from the shipped "
        "population models for this CT; `sopi register --models DIR` then uses them (method sopi+global+opt).",
    )
    prepare.add_argument("ct", type=Path, help="CT file or DICOM folder (HU)")
    prepare.add_argument("--out", type=Path, required=True, help="output folder (new or existing: models prepared there before are replaced)")
    prepare.add_argument("--minutes", type=positive_number, default=5.0, help="training time in all, both networks (default 5)")
    prepare.add_argument("--mask", type=Path, help="spine mask or label map on the CT grid (default: segmented)")
    group = prepare.add_mutually_exclusive_group()
    group.add_argument("--geometry", type=Path, help="C-arm geometry JSON (default: the shipped models' C-arm)")
    group.add_argument("--preset", choices=sorted(PRESETS), help="named C-arm geometry")
    prepare.add_argument(
        "--pretrained", type=Path, nargs=2, metavar=("RTPI", "FINE"),
        help="the models to start from (default: the population models in Resources/Models)",
    )
    prepare.add_argument("--name", default="patient", help="model file names: rtpi_NAME.pt, fine_NAME.pt (default patient)")
    prepare.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    prepare.add_argument("--seed", type=seed, default=0)
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(run=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    import re

    from .cli import _optional_geometry, _progress_bar
    from .device import resolve_device
    from .io import read_ct, read_mask
    from .training.prepare import MODELS_INDEX, checked_pretrained, prepare_models

    check_outputs({"--out": args.out}, {"CT": args.ct, "--mask": args.mask, "--geometry": args.geometry}, folders=("--out",))
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.name):
        raise InputError(f"--name {args.name!r}: expected letters, digits, '_' or '-' (it names the model files)")
    # checked before the CT is read (prepare_models checks them again, cheaply, for API callers)
    pretrained = checked_pretrained(dict(zip(("rtpi", "fine"), args.pretrained)) if args.pretrained else None, args.out, args.name)
    geometry = _optional_geometry(args)
    ct = read_ct(args.ct)
    check_ct_content(ct.data, f"CT {args.ct}")
    mask = read_mask(args.mask, ct) if args.mask else None
    with _progress_bar(f"sopi prepare ({args.minutes:g} min)", args.quiet) as progress:
        prepared = prepare_models(ct, args.out, mask=mask, minutes=args.minutes, geometry=geometry, name=args.name, pretrained=pretrained,
                                  device=str(resolve_device(args.device)), seed=args.seed, progress=progress)
    for path in (prepared.rtpi, prepared.fine, prepared.mask, prepared.folder / MODELS_INDEX):
        print(f"wrote {path}")
    print(f"use them: sopi register --ct {args.ct} --xray XRAY --models {args.out} --out RESULT.json")
    return 0


def models_from_folder(args: argparse.Namespace, ct=None) -> None:
    """``--models DIR`` (``sopi register``, ``sopi benchmark``): set ``--model`` and ``--fine-model``
    and, given the CT they were prepared for, ``--mask`` (unless given or ``--no-mask``) from a prepared folder."""
    from .training.prepare import read_prepared

    if args.models is None:
        return
    if args.model is not None or args.fine_model is not None:
        raise InputError("--models: gives both networks; leave out --model and --fine-model")
    prepared = read_prepared(args.models)
    args.model, args.fine_model = prepared.rtpi, prepared.fine
    if ct is not None and args.mask is None and args.auto_mask is None:
        args.mask = prepared.mask_for(ct)
