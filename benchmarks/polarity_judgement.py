"""How often the polarity judgement of tag-less X-rays is right, per weighting and as registration decides.

For each CT and the realistic benchmark cases of each protocol and seed, the X-ray is judged as it is
(bone bright), inverted (``max - image``: bone dark) and as raw intensities (``exp(-image)``). Each
image is judged with the weight that masks only constant fills, with the weight that also masks the
field found in the image, and as ``prepare_fixed`` decides (a re-reading only where both agree,
``sopi.registration.preparation._agreed``). Prints the counts of right verdicts and which bone-bright
images were re-read.

    python benchmarks/polarity_judgement.py CT MASK [CT MASK ...] --protocols paper,far --seeds 0,1 --cases 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SOPIRegistration"))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_cases import add_realistic_set_arguments, realistic_sets, scenes  # noqa: E402
from sopi.io_xray import XRay  # noqa: E402
from sopi.registration.preparation import _agreed, _decide, _polarity_scores  # noqa: E402
from sopi.render import rendering_volume  # noqa: E402

_READINGS = {"as is": (lambda image: image, "bone-bright"), "inverted": (lambda image: image.max() - image, "bone-dark"),
             "raw": (lambda image: torch.exp(-image), "intensity")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_realistic_set_arguments(parser)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    for ct_path, scene in scenes(parser, args):
        attenuation = rendering_volume(scene.ct, "hu")
        right: dict[tuple[str, str], int] = {}
        flipped: dict[str, list[str]] = {}
        total = 0
        for protocol, seed, images, _ in realistic_sets(scene, args):
            for index, image in enumerate(images):
                total += 1
                for reading, (make, expected) in _READINGS.items():
                    judgement = _polarity_scores(XRay(make(image), scene.geometry), attenuation, scene.nominal.camera_from_world, cpu)
                    verdicts = {"constant fills masked": _decide([judgement.fills]), "field masked too": _decide([judgement.field_masked])}
                    verdicts["registration (both agree)"] = _agreed(list(verdicts.values()))
                    for weighting, verdict in verdicts.items():
                        right[(reading, weighting)] = right.get((reading, weighting), 0) + (verdict == expected)
                        if reading == "as is" and verdict != expected:
                            flipped.setdefault(weighting, []).append(f"{protocol} seed {seed} case {index}")
        print(f"{Path(ct_path).name}: {total} X-rays")
        for (reading, weighting), count in right.items():
            extra = f"; re-read: {', '.join(flipped.get(weighting, []))}" if reading == "as is" and flipped.get(weighting) else ""
            print(f"  {reading:>8} | {weighting:<26} {count}/{total}{extra}", flush=True)


if __name__ == "__main__":
    main()
