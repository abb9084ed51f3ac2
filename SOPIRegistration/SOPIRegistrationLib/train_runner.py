"""Patient-specific model preparation in its own process (``python -m SOPIRegistrationLib.train_runner``).

The same preparation as ``sopi prepare`` (:func:`sopi.training.prepare.prepare_models`: RTPI then
the fine module, half the time each, fine-tuned from the shipped population models with their recipe), with
the spine mask and the C-arm the module gives. The module runs this small entry point the way it
runs ``sopi``: inputs from files, one JSON line per
progress update on stdout (``{"fraction", "stage", "message"}``), the model paths written to
``--result``. Engine and standard library only (no slicer, no Qt).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _report(fraction: float, message: str) -> None:
    print(json.dumps({"fraction": min(max(float(fraction), 0.0), 1.0), "stage": "train", "message": str(message)}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="SOPIRegistrationLib.train_runner", description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, required=True)
    parser.add_argument("--mask", type=Path, required=True)
    parser.add_argument("--geometry", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--name", default="patient")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--result", type=Path, required=True, help="JSON file for {kind: model path}")
    args = parser.parse_args(argv)

    from sopi.atomic import write_json
    from sopi.errors import Cancelled, InputError
    from sopi.geometry import CArmGeometry
    from sopi.io import read_ct, read_label_map
    from sopi.training.prepare import prepare_models

    try:
        ct = read_ct(args.ct)
        mask = read_label_map(args.mask, reference=ct)
        geometry = CArmGeometry.load(args.geometry)
        prepared = prepare_models(ct, args.out, mask=mask, minutes=args.minutes, geometry=geometry, name=args.name,
                                  device=args.device, seed=args.seed, progress=_report)
    except InputError as error:
        print(f"prepare models: error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print("prepare models: cancelled", file=sys.stderr)
        return 130
    write_json(args.result, {"rtpi": str(prepared.rtpi), "fine": str(prepared.fine)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
