"""How much of the instruments in realistic X-rays the preparation masks as metal, and what else it masks.

For each CT and the realistic benchmark cases of each protocol and seed, the instruments the simulator
drew (``sopi.xray_physics``: K-wires, pedicle screws, retractor blades) are rendered alone; a pixel is
metal where their line integral exceeds 0.05. ``sopi.xray_prep.prepare_xray`` then prepares the X-ray
as ``register`` does, and per instrument kind the script counts the instruments in view, those of
which more than half the pixels in the usable field were masked, and the share of their pixels masked
(pixel recall), and those of which more than half the outline (the instrument's pixels next to a
pixel outside it, where a gradient similarity sees it) was masked. False metal: masked pixels more than 4 px from every instrument and from the field's
edge, as a share of such pixels. With ``--clean``, the clean X-rays (DRRs, no instruments) of the same
poses are prepared too: any metal found there is anatomy; the script counts those with more than 0.2 % of
their pixels masked as metal, and the mean share masked.

    python benchmarks/metal_detection.py CT MASK [CT MASK ...] --protocols paper,far --seeds 0,1 --cases 10 [--clean] [--instrument-bands]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SOPIRegistration"))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_cases import add_realistic_set_arguments, realistic_sets, scenes  # noqa: E402
from sopi.filters import dilate  # noqa: E402
from sopi.xray_physics import Instrument, instrument_line_integrals  # noqa: E402
import sopi.xray_prep as xray_prep  # noqa: E402
from sopi.xray_prep import prepare_xray  # noqa: E402

_METAL_LINE_INTEGRAL = 0.05
_MARGIN_PX = 4


def _count(counts: dict, kind: str, pixels: torch.Tensor, masked: torch.Tensor, edges: torch.Tensor) -> None:
    total = int(pixels.sum())
    if total == 0:
        return
    hit = int((masked & pixels).sum())
    row = counts.setdefault(kind, {"in_view": 0, "found": 0, "pixels": 0, "masked_pixels": 0, "edges_found": 0})
    row["in_view"] += 1
    row["found"] += int(hit > 0.5 * total)
    row["pixels"] += total
    row["masked_pixels"] += hit
    row["edges_found"] += int(int((masked & edges).sum()) > 0.5 * max(int(edges.sum()), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_realistic_set_arguments(parser)
    parser.add_argument("--out", type=Path, help="JSON of the counts per CT")
    parser.add_argument("--clean", action="store_true", help="also count metal found in clean X-rays of the same poses")
    parser.add_argument("--instrument-bands", action="store_true", help="straight bands in the mask (sopi.xray_prep.STRAIGHT_INSTRUMENTS)")
    args = parser.parse_args()
    xray_prep.STRAIGHT_INSTRUMENTS = args.instrument_bands
    results = {}
    for ct_path, scene in scenes(parser, args):
        shape = scene.geometry.shape
        counts: dict = {}
        false_pixels = clean_pixels = 0
        for _, _, images, draws in realistic_sets(scene, args):
            for image, draw in zip(images, draws):
                prepared = prepare_xray(image)
                invalid = prepared.outside_field | prepared.saturated
                inner = ~dilate(invalid, _MARGIN_PX)
                tools = [Instrument(**item) for item in draw["instruments"]]
                every = instrument_line_integrals(tools, shape) > _METAL_LINE_INTEGRAL
                for tool in tools:
                    pixels = (instrument_line_integrals([tool], shape) > _METAL_LINE_INTEGRAL) & ~invalid
                    edges = pixels & dilate(~pixels, 1)  # its outline: where the similarity sees it
                    _count(counts, tool.kind, pixels, prepared.metal, edges)
                clean = inner & ~dilate(every, _MARGIN_PX)
                false_pixels += int((prepared.metal & clean).sum())
                clean_pixels += int(clean.sum())
        name = Path(ct_path).name.split(".")[0]
        results[name] = {"kinds": counts, "false_metal_fraction": false_pixels / max(clean_pixels, 1)}
        print(f"{name}: false metal {100 * results[name]['false_metal_fraction']:.2f} % of the pixels away from instruments", flush=True)
        if args.clean:
            shares = [float(prepare_xray(image).metal.float().mean())
                      for _, _, images, _ in realistic_sets(scene, args, realistic=False) for image in images]
            results[name]["clean"] = {"xrays": len(shares), "over_0.2_percent": sum(share > 0.002 for share in shares),
                                      "mean_fraction": sum(shares) / max(len(shares), 1)}
            row = results[name]["clean"]
            print(f"  clean X-rays: {row['over_0.2_percent']} of {row['xrays']} with more than 0.2 % masked as metal, "
                  f"mean {100 * row['mean_fraction']:.2f} %", flush=True)
        for kind, row in sorted(counts.items()):
            print(f"  {kind}: {row['found']} of {row['in_view']} found, {row['edges_found']} with their outline masked, "
                  f"pixel recall {row['masked_pixels'] / max(row['pixels'], 1):.2f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
