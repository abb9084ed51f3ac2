"""The ``sopi`` command line (also ``python -m sopi``).

Bad input prints one line naming the file or field and exits with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path


from . import __version__
from .device import resolve_device
from .errors import Cancelled, InputError
from .geometry import NOMINAL_VIEWS, PRESETS, CArmGeometry
from .validate import check_ct_content, check_outputs, positive_number, seed

__all__ = ["main"]


# --------------------------------------------------------------------------- shared options


def _add_geometry_options(parser: argparse.ArgumentParser, default_preset: str | None) -> None:
    group = parser.add_mutually_exclusive_group(required=default_preset is None)
    group.add_argument("--geometry", type=Path, help="geometry JSON (sdd_mm, rows, cols, pixel_spacing_mm, ...)")
    group.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=default_preset,
        help=f"named C-arm geometry (default: {default_preset})" if default_preset else "named C-arm geometry",
    )


def _geometry(args: argparse.Namespace) -> CArmGeometry:
    return _load_geometry(args.geometry) if args.geometry else CArmGeometry.preset(args.preset)


def _optional_geometry(args: argparse.Namespace) -> CArmGeometry | None:
    """``--geometry`` or ``--preset`` where either is given, else None (the X-ray's or the model's own)."""
    if args.geometry:
        return _load_geometry(args.geometry)
    return CArmGeometry.preset(args.preset) if args.preset else None


def _load_geometry(path: Path) -> CArmGeometry:
    """``--geometry FILE``; a preset's name given there points to ``--preset``."""
    if not path.exists() and str(path) in PRESETS:
        raise InputError(f"--geometry {path}: no such file; {path} is a preset name: use --preset {path}")
    return CArmGeometry.load(path)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line: ``sopi COMMAND: error: ... (see sopi COMMAND --help)``."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_render_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--attenuation",
        choices=("hu", "raw"),
        default="hu",
        help="hu: convert HU to linear attenuation (1/mm, water 0.02683, air below -900 HU dropped); raw: integrate voxel values as they are",
    )
    parser.add_argument("--step-mm", type=positive_number, default=1.0, help="largest sample spacing along a ray (mm, default 1)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")


def _add_model_options(parser: argparse.ArgumentParser, prepared: bool = False) -> None:
    parser.add_argument("--model", type=Path, help="trained RTPI network (.pt with its .json) for rtpi, rtpi+opt, sopi, sopi+opt")
    parser.add_argument("--fine-model", type=Path, help="trained fine-registration encoders for fine, sopi, sopi+opt")
    if prepared:
        parser.add_argument(
            "--models", type=Path,
            help="a folder written by sopi prepare: both networks (the default method becomes sopi+global+opt) and, for its CT, the spine mask",
        )


#: ``sopi --progress``: ``bar`` (tqdm on stderr), ``json`` or ``none``; set by :func:`main`.
_PROGRESS = {"mode": "bar"}


@contextlib.contextmanager
def _progress_bar(description: str, quiet: bool) -> Iterator[Callable[[float, str], None]]:
    """A tqdm bar driven by ``update(fraction, message)`` callbacks (the engine's progress protocol).

    With ``sopi --progress json`` each update is one line on stdout instead, for a program that
    drives ``sopi`` (the Slicer module): ``{"fraction": 0..1, "stage": first word of the
    message, "message": ...}``, flushed at once; ``--progress none`` shows nothing."""
    if _PROGRESS["mode"] == "json":
        import json

        def report(fraction: float, message: str) -> None:
            text = str(message)
            line = {"fraction": min(max(float(fraction), 0.0), 1.0), "stage": text.split(" ", 1)[0] or description, "message": text}
            print(json.dumps(line), flush=True)

        yield report
        return
    from tqdm import tqdm

    with tqdm(total=1000, desc=description, disable=quiet or _PROGRESS["mode"] == "none", bar_format="{l_bar}{bar}| {postfix}") as bar:

        def update(fraction: float, message: str) -> None:
            bar.n = round(1000 * min(max(fraction, 0.0), 1.0))
            bar.set_postfix_str(message)
            bar.refresh()

        yield update


# --------------------------------------------------------------------------- commands


def _cmd_drr(args: argparse.Namespace) -> int:
    from .geometry import load_pose
    from .io import read_ct, read_mask, write_xray
    from .render import render_drr, rendering_volume
    from .validate import check_pose_in_front

    check_outputs({"--out": args.out}, {"CT": args.ct, "--pose": args.pose, "--mask": args.mask, "--geometry": args.geometry})
    geometry = _geometry(args)
    pose = load_pose(args.pose)
    ct = read_ct(args.ct)
    check_pose_in_front(pose, ct.center_world, geometry.sdd_mm, f"--pose {args.pose}")
    mask = read_mask(args.mask, ct) if args.mask else None
    volume = rendering_volume(ct, args.attenuation, mask=mask)
    image = render_drr(volume, geometry, pose, step_mm=args.step_mm, device=resolve_device(args.device))
    write_xray(args.out, image, geometry)
    print(f"wrote {args.out} ({geometry.rows}x{geometry.cols})")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate_case

    if args.views:
        from .cli_views import simulate_views_command

        return simulate_views_command(args)
    files = simulate_case(
        ct_path=args.ct,
        out_dir=args.out,
        geometry=_geometry(args),
        mask_path=args.mask,
        view=args.view,
        protocol=args.protocol,
        seed=args.seed,
        step_mm=args.step_mm,
        device=resolve_device(args.device),
        realistic=args.realistic,
        raw_output=args.raw,
        case=args.case,
        cases=args.cases,
    )
    for path in files:
        print(f"wrote {path}")
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from .io import read_ct, read_label_map, write_volume
    from .segment import segment_spine, spine_from_labels

    check_outputs({"--out": args.out}, {"CT": args.ct, "--labels": args.labels})
    if args.labels:
        ct = read_ct(args.ct)
        ids = _parse_ids(args.label_ids) if args.label_ids else None
        labels = read_label_map(args.labels, reference=ct)
        mask = spine_from_labels(labels, ids) if ids else spine_from_labels(labels)
    else:
        ct = read_ct(args.ct)
        with _progress_bar("segmenting spine", args.quiet) as progress:
            try:
                mask = segment_spine(ct, progress=progress)
            except InputError as error:  # name the file the CT came from
                raise InputError(f"{args.ct}: {error}") from None
    write_volume(args.out, mask)
    voxels = int(mask.data.count_nonzero())
    print(f"wrote {args.out} ({voxels} spine voxels, {voxels * float(mask.spacing.prod()) / 1000:.1f} ml)")
    return 0


def _default_models(args: argparse.Namespace, ct) -> tuple[Path | None, Path | None]:
    """``--model``/``--fine-model``, else the shipped models the method needs, with a warning
    when they were trained on another CT than ``ct``."""
    import warnings

    from .nets.shipped import other_ct_warning, shipped_model
    from .registration.methods import needs_model

    chosen = {"rtpi": args.model, "fine": args.fine_model}
    for kind in sorted(needs_model(args.method)):
        if chosen[kind] is None and (path := shipped_model(kind)) is not None:
            chosen[kind] = path
            warning = other_ct_warning(path, ct, kind)
            if warning:
                warnings.warn(warning, UserWarning, stacklevel=2)
    return chosen["rtpi"], chosen["fine"]


def _frame(text: str | None) -> int | str | None:
    """``--frame``: an index (negative counts from the end) or ``mean``."""
    if text is None or text == "mean":
        return text
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--frame: expected a frame index or 'mean', got {text!r}") from None


def _parse_ids(text: str) -> list[int]:
    ids: list[int] = []
    for part in text.split(","):
        try:
            if "-" in part:
                low, high = (int(value) for value in part.split("-"))
                ids.extend(range(low, high + 1))
            elif part.strip():
                ids.append(int(part))
        except ValueError:
            raise InputError(f"--label-ids: expected integers or ranges like 18-46,50, got {text!r}") from None
    return ids


def _cmd_register(args: argparse.Namespace) -> int:
    from .atomic import write_json
    from .cli_prepare import models_from_folder
    from .geometry import load_pose
    from .io import read_ct, read_xray
    from .registration import register

    if len(args.xray) > 1:  # several views: sopi.cli_views
        from .cli_views import register_views_command

        if args.models is not None:
            raise InputError("--models: the learned methods register one view; leave it out with several --xray")
        if args.field_mask is not None:
            raise InputError("--field-mask: describes one X-ray; leave it out with several --xray")
        return register_views_command(args)
    if args.geometry and len(args.geometry) > 1:
        raise InputError(f"1 --xray but {len(args.geometry)} --geometry; expected one --geometry per --xray, in the same order")
    args.xray, args.geometry = args.xray[0], (args.geometry[0] if args.geometry else None)
    inputs = {
        "--ct": args.ct, "--xray": args.xray, "--geometry": args.geometry, "--init": args.init, "--mask": args.mask,
        "--model": args.model, "--fine-model": args.fine_model, "--field-mask": args.field_mask,
    }
    check_outputs({"--out": args.out, "--fused": args.fused, "--mask-out": args.mask_out}, inputs)
    if args.fused is not None and args.fused.suffix.lower() != ".png":
        raise InputError(f"--fused {args.fused}: the fused overlay is a PNG image; expected a name ending in .png")
    if args.fused is not None and args.fused.resolve() == args.out.resolve():
        raise InputError(f"--fused {args.fused}: is the same file as --out; expected two different files")
    from .cli_views import check_mask_out, write_mask_out

    check_mask_out(args)
    geometry = _optional_geometry(args)
    ct = read_ct(args.ct)
    check_ct_content(ct.data, f"--ct {args.ct}")
    models_from_folder(args, ct)
    if args.method is None:
        from .registration.methods import default_method

        args.method = default_method(args.model is not None and args.fine_model is not None)
    model, fine_model = _default_models(args, ct)
    xray = read_xray(args.xray, geometry=geometry, polarity=args.polarity, frame=_frame(args.frame))
    if args.field_mask is not None:  # with any shutter the file gave
        from dataclasses import replace

        from .io_xray import read_field_mask

        exposed = read_field_mask(args.field_mask, tuple(xray.image.shape))
        xray = replace(xray, field_mask=exposed if xray.field_mask is None else exposed & xray.field_mask)
    initial_pose = load_pose(args.init) if args.init else None
    with _progress_bar(f"sopi register ({args.method})", args.quiet) as progress:
        result = register(
            ct, xray, initial_pose=initial_pose, view=None if args.init else args.view, mask=args.mask,
            auto_mask=args.auto_mask, method=args.method, model=model, fine_model=fine_model,
            device=resolve_device(args.device), seed=args.seed, iteration_scale=args.iteration_scale,
            pyramid=not args.no_pyramid, prepare=not args.no_prepare, step_mm=args.step_mm, flip=args.flip, progress=progress,
        )
    write_json(args.out, result.to_dict())
    print(f"wrote {args.out} (similarity {result.similarity:.4f}, {result.time_s:.1f} s)")
    write_mask_out(args, result)
    verdict = "likely failed: check the overlay before using it" if result.likely_failed else "looks right"
    print(f"confidence {result.confidence:.2f} ({verdict})")
    from .cli_views import print_reading, print_turned

    print_turned([result.xray_preparation["orientation"]])
    print_reading(result.xray_preparation)
    if args.fused:
        from .fusion import overlay_pair, write_fused_png
        from .render import rendering_volume

        shown, drr = overlay_pair(rendering_volume(ct, "hu"), xray, result.camera_from_world, result.xray_preparation["orientation"],
                                  resolve_device(args.device))
        write_fused_png(args.fused, shown, drr)
        print(f"wrote {args.fused}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    check_outputs({"--out": args.out}, {}, folders=("--out",))
    for path in run_demo(args.out, device=resolve_device(args.device)):
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from .cli_benchmark import add_benchmark_parser

    parser = _Parser(prog="sopi", description="2D X-ray / 3D CT registration engine (SOPI).")
    parser.add_argument("--version", action="version", version=f"sopi {__version__}")
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                        help="bar: a progress bar on stderr (default); json: one JSON line per update on stdout "
                        '({"fraction", "stage", "message"}); none: no progress')
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    drr = commands.add_parser("drr", help="render a DRR of a CT at a pose", description="Render a DRR of a CT at a camera_from_world pose.")
    drr.add_argument("ct", type=Path, help="CT file (NIfTI, NRRD, MHA) or DICOM series folder")
    drr.add_argument("--pose", type=Path, required=True, help='pose JSON {"matrix": 4x4 camera_from_world}')
    _add_geometry_options(drr, default_preset=None)
    drr.add_argument("--out", type=Path, required=True, help="output image (.mha, .nrrd, .nii.gz, .png, .tif)")
    drr.add_argument("--mask", type=Path, help="render only the voxels inside this mask or label map (non-zero)")
    _add_render_options(drr)
    drr.set_defaults(run=_cmd_drr)

    simulate = commands.add_parser(
        "simulate",
        help="write a synthetic registration case",
        description="Render a synthetic X-ray at a random pose about a nominal view: xray.mha, geometry.json, gt.json, init.json.",
    )
    simulate.add_argument("ct", type=Path, help="CT file or DICOM folder")
    simulate.add_argument("--out", type=Path, required=True, help="output folder")
    simulate.add_argument("--mask", type=Path, help="spine mask or label map: its centroid is the isocentre (default: volume centre)")
    simulate.add_argument("--view", choices=NOMINAL_VIEWS, default="ap")
    simulate.add_argument(
        "--views", help="several views of one pose, e.g. ap,lateral: xray_<view>.mha and geometry_<view>.json per view "
        "(each after the first with view_from_reference), gt.json and init.json of the first; replaces --view",
    )
    simulate.add_argument(
        "--protocol", default="paper",
        help="pose distribution: paper, wide or far (far: anywhere along the spine, needs --mask; default paper)",
    )
    simulate.add_argument("--seed", type=seed, default=0)
    simulate.add_argument(
        "--case", type=int, default=0,
        help="which case to write: case CASE of sopi benchmark --cases CASES with this seed, protocol and mask (default 0)",
    )
    simulate.add_argument(
        "--cases", type=int, default=1,
        help="the benchmark's --cases: its poses and draws depend on how many cases it draws (default 1)",
    )
    simulate.add_argument(
        "--realistic", action="store_true",
        help="an intra-operative X-ray: two materials, instruments, collimation, scatter, noise, blur, vendor processing "
        "drawn from the seed (docs/xray_realism.md); the draw goes to realism.json. The same X-ray as that case of "
        "sopi benchmark --realistic with this seed (see --case; with --views: every view its own draw, as sopi benchmark --views --realistic draws it)",
    )
    simulate.add_argument("--raw", action="store_true", help="with --realistic: raw detector counts (bone dark; register with --polarity intensity)")
    _add_geometry_options(simulate, default_preset="perlove-plx118f")
    _add_render_options(simulate)
    simulate.set_defaults(run=_cmd_simulate, attenuation="hu")

    segment = commands.add_parser(
        "segment", help="segment the spine of a CT", description="Automatic vertebral-column mask (or one taken from an existing label map)."
    )
    segment.add_argument("ct", type=Path, help="CT file or DICOM folder")
    segment.add_argument("--out", type=Path, required=True, help="output mask (.nii.gz, .nrrd, .mha)")
    segment.add_argument("--labels", type=Path, help="use this label map instead of automatic segmentation")
    segment.add_argument("--label-ids", help="label ids of the vertebrae in --labels, e.g. 18-46 (default: TotalSegmentator v1 vertebrae)")
    segment.add_argument("--quiet", action="store_true", help="no progress bar")
    segment.set_defaults(run=_cmd_segment)

    from .registration import METHODS

    reg = commands.add_parser(
        "register", help="register an X-ray to a CT", description="Find the camera_from_world pose of an X-ray relative to a CT."
    )
    reg.add_argument("--ct", type=Path, required=True, help="CT file or DICOM folder (HU)")
    reg.add_argument(
        "--xray", type=Path, required=True, action="append",
        help="X-ray file (MHA/NRRD/NIfTI/PNG/TIFF/DICOM); repeat for several views of one patient (AP + lateral), "
        "each with its --geometry: registers them jointly, RESULT's matrix is the first view's camera_from_world",
    )
    reg_geometry = reg.add_mutually_exclusive_group()
    reg_geometry.add_argument(
        "--geometry", type=Path, action="append",
        help="geometry JSON (default: from the X-ray file); one per --xray, in the same order; views after the first "
        "carry view_from_reference (docs/conventions.md)",
    )
    reg_geometry.add_argument("--preset", choices=sorted(PRESETS), help="named C-arm geometry")
    start = reg.add_mutually_exclusive_group()
    start.add_argument("--init", type=Path, help="initial pose JSON")
    start.add_argument("--view", choices=NOMINAL_VIEWS, default="ap", help="start from this nominal view (default ap)")
    masks = reg.add_mutually_exclusive_group()
    masks.add_argument("--mask", type=Path, help="spine mask or label map on the CT grid")
    masks.add_argument(
        "--auto-mask", action="store_const", const=True, default=None,
        help="segment the spine automatically (the default for the methods that need a mask: the default global+opt, rtpi, fine, sopi and their +opt)",
    )
    masks.add_argument("--no-mask", dest="auto_mask", action="store_const", const=False, help="never segment the spine")
    reg.add_argument(
        "--method", choices=sorted(METHODS),
        help="registration method (default: global+opt, the global search then opt; sopi+global+opt when --model and --fine-model or --models are given)",
    )
    _add_model_options(reg, prepared=True)
    reg.add_argument("--out", type=Path, required=True, help="result JSON")
    reg.add_argument("--fused", type=Path, help="also write the DRR at the result fused over the X-ray (PNG; an X-ray over 512 pixels binned as it was registered)")
    reg.add_argument(
        "--mask-out", type=Path,
        help="also write the spine mask the registration used, 0/1 on the CT's grid (.nii.gz, .nii, .nrrd or .mha): "
        "the one segmented automatically (segmenting it even for a method that needs none), or --mask's",
    )
    reg.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    reg.add_argument("--seed", type=seed, default=0)
    reg.add_argument("--iteration-scale", type=positive_number, default=1.0, help="multiply every stage's iteration budget (default 1)")
    reg.add_argument("--no-pyramid", action="store_true", help="run every stage at the method's finest detector level")
    reg.add_argument(
        "--step-mm", type=positive_number, default=1.0,
        help="ray-marching step at the full detector resolution (mm, default 1; coarse levels use longer steps)",
    )
    reg.add_argument(
        "--polarity", choices=("auto", "bone-bright", "bone-dark", "intensity"), default="auto",
        help="how the X-ray shows bone: auto (from the file's tags, else judged against a DRR), bone-bright, "
        "bone-dark, or intensity (raw detector values, converted with -log)",
    )
    reg.add_argument("--frame", help="multi-frame X-rays (fluoroscopy): the frame index (0 = first, -1 = last) or mean")
    reg.add_argument(
        "--field-mask", type=Path,
        help="an image of the X-ray file's size, non-zero where the beam reached the detector (the collimator's opening); "
        "pixels outside are left out, together with the file's own DICOM shutters (one --xray)",
    )
    reg.add_argument(
        "--flip", choices=("auto", "none", "left-right", "up-down", "both", "rotated-cw", "rotated-ccw", "diagonal", "anti-diagonal"), default="auto",
        help="how the X-ray's pixels face: auto (a DICOM radiograph's Patient Orientation, else as stored), or what the stored "
        "image is against the C-arm's convention (docs/conventions.md): mirrored left-right, up-down, both (turned 180 deg), or "
        "turned 90 deg clockwise or counter-clockwise, or mirrored across its diagonal (from the top-left corner) or its "
        "anti-diagonal; it is turned back, and the result's pose is for the image so turned",
    )
    reg.add_argument(
        "--no-prepare", action="store_true",
        help="use every pixel as read (no masks for the field of view, saturation and metal; no polarity judgement)",
    )
    reg.add_argument("--quiet", action="store_true", help="no progress bar")
    reg.set_defaults(run=_cmd_register)

    add_benchmark_parser(commands)

    from .cli_prepare import add_prepare_parser
    from .training.cli import add_train_parser

    add_prepare_parser(commands)
    add_train_parser(commands)

    demo = commands.add_parser("demo", help="render DRRs of the bundled sample CT", description="AP and lateral DRRs of the sample CT.")
    demo.add_argument("--out", type=Path, default=Path("demo_output"))
    demo.add_argument("--device", default="auto")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for bad input)."""
    import warnings

    args = build_parser().parse_args(argv)
    _PROGRESS["mode"] = args.progress

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"sopi {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return args.run(args)
    except InputError as error:
        print(f"sopi {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print(f"sopi {args.command}: cancelled", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"sopi {args.command}: error: not enough memory for this input", file=sys.stderr)
        return 1
    except OSError as error:  # disk full, permissions changed while running, ...
        print(f"sopi {args.command}: error: {error}", file=sys.stderr)
        return 1
