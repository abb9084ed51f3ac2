"""``sopi benchmark``: methods evaluated on simulated cases of one or several CTs (:mod:`sopi.benchmark`,
:mod:`sopi.benchmark_multi`; several views: :mod:`sopi.cli_views`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .device import resolve_device
from .errors import InputError
from .geometry import NOMINAL_VIEWS
from .validate import check_outputs, positive_int, seed

__all__ = ["add_benchmark_parser"]


def add_benchmark_parser(commands) -> None:
    """Add ``sopi benchmark`` to the ``sopi`` subcommands."""
    from .cli import _add_geometry_options, _add_model_options

    bench = commands.add_parser(
        "benchmark", help="evaluate methods on simulated cases", description="Simulated cases at known poses; every method; Table-1-style report."
    )
    bench.add_argument("--ct", type=Path, action="append", required=True, help="CT file or DICOM folder (HU); repeat for several CTs")
    bench.add_argument(
        "--mask", action="append", required=True,
        help="spine mask or label map (non-zero = spine), or auto to segment it; one per --ct, in the same order",
    )
    bench.add_argument("--protocol", default="paper", help="paper, wide or far (far: anywhere along the spine, sopi.protocols; default paper)")
    bench.add_argument("--cases", type=positive_int, default=50)
    bench.add_argument("--seed", type=seed, default=0)
    bench.add_argument("--methods", default="opt", help="comma-separated method names (default opt)")
    _add_model_options(bench, prepared=True)
    bench.add_argument("--out", type=Path, required=True, help="output folder")
    bench.add_argument(
        "--realistic", action="store_true",
        help="simulate intra-operative X-rays: two materials, instruments, collimation, scatter, noise, blur (docs/xray_realism.md)",
    )
    bench.add_argument("--no-prepare", action="store_true", help="register without X-ray preparation (ablation)")
    bench.add_argument("--view", choices=NOMINAL_VIEWS, default="ap")
    bench.add_argument("--views", help="several views, e.g. ap,lateral: every method on the first view alone and on all jointly, same cases")
    _add_geometry_options(bench, default_preset="perlove-plx118f")
    bench.add_argument("--device", default="auto")
    bench.add_argument("--quiet", action="store_true")
    bench.set_defaults(run=_cmd_benchmark)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .cli import _geometry, _progress_bar
    from .benchmark import run_benchmark
    from .benchmark_multi import AUTO_MASK, run_benchmarks
    from .cli_prepare import models_from_folder

    cts, masks = args.ct, [mask if mask == AUTO_MASK else Path(mask) for mask in args.mask]
    if len(masks) != len(cts):
        raise InputError(f"{len(cts)} --ct but {len(masks)} --mask; expected one --mask (a file or {AUTO_MASK}) per --ct, in the same order")
    several = len(cts) > 1 or AUTO_MASK in masks
    models_from_folder(args)
    if args.views:
        if several:
            raise InputError("--views: benchmarks one CT with its mask file; give one --ct and one --mask")
        from .cli_views import benchmark_views_command

        args.ct, args.mask = cts[0], masks[0]
        return benchmark_views_command(args)
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    if not methods:
        raise InputError(f"--methods {args.methods!r}: names no method; expected comma-separated names such as opt,rtpi+opt")
    inputs = {("--ct" if index == 0 else f"--ct #{index + 1}"): ct for index, ct in enumerate(cts)}
    inputs |= {("--mask" if index == 0 else f"--mask #{index + 1}"): mask for index, mask in enumerate(masks) if mask != AUTO_MASK}
    check_outputs({"--out": args.out}, inputs | {"--model": args.model, "--fine-model": args.fine_model}, folders=("--out",))
    with _progress_bar("sopi benchmark", args.quiet) as update:
        options = dict(
            methods=methods, protocol=args.protocol, cases=args.cases, seed=args.seed, realistic=args.realistic, view=args.view,
            geometry=_geometry(args), model=args.model, fine_model=args.fine_model, prepare=not args.no_prepare,
            device=resolve_device(args.device), progress=lambda done, total, message: update(done / total, message),
        )
        written = run_benchmarks(cts, masks, args.out, **options) if several else run_benchmark(cts[0], masks[0], args.out, **options)
    for path in written:
        print(f"wrote {path}")
    return 0
