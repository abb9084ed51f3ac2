"""``sopi register`` and ``sopi simulate`` with several views (``--xray X0 --geometry G0 --xray X1 --geometry G1``,
``--views ap,lateral``), and what ``sopi register`` writes and prints beside its result (``--mask-out``, the reading, a
turned X-ray); the single-view paths stay in :mod:`sopi.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .device import resolve_device
from .errors import InputError
from .geometry import NOMINAL_VIEWS, CArmGeometry
from .validate import check_ct_content, check_outputs

__all__ = [
    "benchmark_views_command", "check_mask_out", "parse_views", "print_turned", "register_views_command", "simulate_views_command",
    "view_geometries", "write_mask_out",
]


def parse_views(text: str) -> list[str]:
    """``--views ap,lateral`` as a list of names (order kept)."""
    views = [name.strip() for name in text.split(",") if name.strip()]
    known = NOMINAL_VIEWS
    unknown = [name for name in views if name not in known]
    if unknown:
        raise InputError(f"--views {text!r}: unknown view(s) {unknown}; expected comma-separated names from {list(known)}")
    if len(views) < 2 or len(set(views)) != len(views):
        raise InputError(f"--views {text!r}: expected two or more different views, such as ap,lateral")
    return views


def view_geometries(xrays: list[Path], geometries: list[Path] | None, preset: str | None) -> list[CArmGeometry | None]:
    """One geometry per ``--xray`` (``None``: the file's own); a one-line error when the counts differ."""
    from .cli import _load_geometry

    if geometries:
        if len(geometries) != len(xrays):
            raise InputError(
                f"{len(xrays)} --xray but {len(geometries)} --geometry; expected one --geometry per --xray, in the same "
                "order (or none when every X-ray file carries its geometry)"
            )
        return [_load_geometry(path) for path in geometries]
    if preset:
        return [CArmGeometry.preset(preset)] * len(xrays)
    return [None] * len(xrays)


def register_views_command(args: argparse.Namespace) -> int:
    """``sopi register`` with two or more ``--xray``: a joint registration; RESULT's ``matrix`` is view 0's."""
    from .atomic import write_json
    from .cli import _frame, _progress_bar
    from .geometry import load_pose
    from .io import read_ct, read_xray
    from .registration.methods import DEFAULT_METHOD
    from .registration.multiview import multiview_methods, register_views

    inputs = {"--ct": args.ct, "--init": args.init, "--mask": args.mask, "--model": args.model, "--fine-model": args.fine_model}
    inputs.update({f"--xray {index}": path for index, path in enumerate(args.xray)})
    inputs.update({f"--geometry {index}": path for index, path in enumerate(args.geometry or [])})
    check_outputs({"--out": args.out, "--fused": args.fused, "--mask-out": args.mask_out}, inputs)
    if args.fused is not None and args.fused.suffix.lower() != ".png":
        raise InputError(f"--fused {args.fused}: the fused overlay is a PNG image; expected a name ending in .png")
    check_mask_out(args)
    if args.model or args.fine_model:
        raise InputError("--model/--fine-model: the learned methods register one view; with several --xray use " + ", ".join(multiview_methods()))
    method = args.method or DEFAULT_METHOD  # the global search then opt, as for one view without trained models
    if method not in multiview_methods():
        raise InputError(f"--method {method}: registers one view; with several --xray use one of {multiview_methods()}")
    geometries = view_geometries(args.xray, args.geometry, args.preset)
    ct = read_ct(args.ct)
    check_ct_content(ct.data, f"--ct {args.ct}")
    xrays = [read_xray(path, geometry=geometry, polarity=args.polarity, frame=_frame(args.frame)) for path, geometry in zip(args.xray, geometries)]
    initial_pose = load_pose(args.init) if args.init else None
    with _progress_bar(f"sopi register ({method}, {len(xrays)} views)", args.quiet) as progress:
        result = register_views(
            ct, xrays, initial_pose=initial_pose, view=None if args.init else args.view, mask=args.mask,
            auto_mask=args.auto_mask, method=method, device=resolve_device(args.device), seed=args.seed,
            iteration_scale=args.iteration_scale, pyramid=not args.no_pyramid, prepare=not args.no_prepare,
            step_mm=args.step_mm, flip=args.flip, progress=progress,
        )
    write_json(args.out, result.to_dict())
    write_mask_out(args, result)
    scores = ", ".join(f"{score:.3f}" for score in result.view_similarities)
    print(f"wrote {args.out} (similarity {result.similarity:.4f}; per view {scores}; {result.time_s:.1f} s)")
    verdict = "likely failed: check every view's overlay before using it" if result.likely_failed else "looks right"
    per_view = ", ".join(f"{value:.2f}" for value in result.view_confidences)
    print(f"confidence {result.confidence:.2f}, the lowest of the views' ({per_view}): {verdict}")
    print_turned([record["orientation"] for record in result.xray_preparation])
    if args.fused:
        from .fusion import overlay_pair, write_fused_views_png
        from .render import rendering_volume

        volume = rendering_volume(ct, "hu")
        pairs = [overlay_pair(volume, xray, pose, record["orientation"], resolve_device(args.device))  # each pose is for its view turned
                 for xray, pose, record in zip(xrays, result.view_poses, result.xray_preparation)]
        write_fused_views_png(args.fused, pairs)
        print(f"wrote {args.fused} ({len(pairs)} views side by side)")
    return 0


def simulate_views_command(args: argparse.Namespace) -> int:
    """``sopi simulate --views ap,lateral``: one X-ray and geometry per view, the truth and start of view 0."""
    from .cli import _geometry
    from .simulate import simulate_views

    if args.raw:
        raise InputError("--views: raw detector counts are single-view for now; drop --raw")
    files = simulate_views(
        ct_path=args.ct, out_dir=args.out, geometry=_geometry(args), views=parse_views(args.views), mask_path=args.mask,
        protocol=args.protocol, seed=args.seed, step_mm=args.step_mm, device=resolve_device(args.device), realistic=args.realistic,
        case=args.case, cases=args.cases,
    )
    for path in files:
        print(f"wrote {path}")
    return 0


def benchmark_views_command(args: argparse.Namespace) -> int:
    """``sopi benchmark --views ap,lateral``: each method on the first view alone and on all views, same cases."""
    from .benchmark_views import run_views_benchmark
    from .cli import _geometry, _progress_bar

    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    if not methods:
        raise InputError(f"--methods {args.methods!r}: names no method; expected comma-separated names such as opt")
    if args.model or args.fine_model:
        raise InputError("--views: learned models are single-view for now; drop --model/--fine-model")
    check_outputs({"--out": args.out}, {"--ct": args.ct, "--mask": args.mask}, folders=("--out",))
    with _progress_bar("sopi benchmark (views)", args.quiet) as update:
        written = run_views_benchmark(
            args.ct, args.mask, args.out, views=parse_views(args.views), methods=methods, protocol=args.protocol,
            cases=args.cases, seed=args.seed, geometry=_geometry(args), device=resolve_device(args.device),
            prepare=not args.no_prepare, realistic=args.realistic, progress=lambda done, total, message: update(done / total, message),
        )
    for path in written:
        print(f"wrote {path}")
    return 0


def print_turned(records: list[dict]) -> None:
    """Say when an X-ray was registered turned (its pose is for the turned image; docs/conventions.md); ``records``:
    each view's ``xray_preparation["orientation"]``."""
    from .xray_orientation import Orientation

    for index, record in enumerate(records):
        if Orientation.from_record(record).changes:
            print(f"X-ray{f' {index}' if len(records) > 1 else ''} registered turned: {record['reason']}")


def print_reading(preparation: dict) -> None:
    """Say when the X-ray was registered read against its own cues (``polarity_against_the_cues``: no reading its edges
    and pattern chose explained it, see :data:`sopi.registration.passes.NOTHING_EXPLAINED_BELOW`)."""
    if preparation.get("polarity_against_the_cues", False):
        print(f"X-ray read as {preparation['polarity']}: read as its edges and pattern suggest, it explained nothing; "
              "check the overlay, or give --polarity")


def check_mask_out(args: argparse.Namespace) -> None:
    """``sopi register --mask-out``: a volume file name other than ``--out`` and ``--fused``; it asks for the spine to
    be segmented where no ``--mask`` is given (``args.auto_mask`` set), and cannot go with ``--no-mask``."""
    from .io import VOLUME_WRITE_SUFFIXES, file_suffix

    if args.mask_out is None:
        return
    if file_suffix(args.mask_out) not in VOLUME_WRITE_SUFFIXES:
        raise InputError(f"--mask-out {args.mask_out}: a volume file; expected a name ending in one of {', '.join(VOLUME_WRITE_SUFFIXES)}")
    if any(other is not None and args.mask_out.resolve() == Path(other).resolve() for other in (args.out, args.fused)):
        raise InputError(f"--mask-out {args.mask_out}: is the same file as --out or --fused; expected a file of its own")
    if args.auto_mask is False:
        raise InputError("--mask-out: there is no spine mask to write with --no-mask; leave one of them out")
    if args.mask is None:
        args.auto_mask = True


def write_mask_out(args: argparse.Namespace, result) -> None:
    """Write ``result.spine`` to ``args.mask_out`` (atomically) when it is asked for."""
    from .io import write_volume

    if args.mask_out is None:
        return
    write_volume(args.mask_out, result.spine)
    print(f"wrote {args.mask_out} (the spine mask used: {result.mask_source})")
