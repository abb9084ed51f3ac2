"""How well fine-module encoders point the pose gradient towards the target.

For each model, draws pose pairs from seeds training never drew (training draws seed 0 and
its successors; this script starts at ``--seed``, 9000 by default) with the model's own
training spreads, or with ``--offset-sd`` for another start-to-target regime, and reports
against the geodesic gradient of the SE(3) distance (what eq. 7 trains towards):

* mean cosine of the rotation and translation parts, and the direction loss (eq. 7);
* per axis, how often the learned gradient has the geodesic one's sign. Gradient steps
  move each parameter by its sign (Adam), so an axis near 50 % is not being registered.

``--reference ncc`` / ``gc`` scores a hand-made similarity of the whole CT's DRR on the same
pairs: what any image similarity of one view can reach. ``--one-axis`` offsets each pair along
one axis only; with all six offset at once, the other axes' offsets decide the sign of a
weakly seen axis (depth, out-of-plane rotations) even for the reference.

    python benchmarks/fine_direction.py --model SOPIRegistration/Resources/Models/fine_sample_ct.pt \
        --model other.pt --pairs 64 --out direction.md
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from sopi.distances import geodesic_gradient
from sopi.geometry import PARAM_NAMES
from sopi.nets.fine_loss import direction_loss, part_cosines
from sopi.nets.model_file import load_model
from sopi.similarity import gradient_correlation, ncc
from sopi.sample_data import sample_ct_path, sample_vertebrae_path
from sopi.training.augmentation import AugmentSettings
from sopi.training.distributed import DistContext
from sopi.training.fine import FineSettings, FineTask


REFERENCES = {"ncc": ncc, "gc": gradient_correlation}


def reference_gradients(name: str, case, current: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """Gradient (B, 6) of ``-similarity(fixed, DRR of the whole CT)``, weighted by the projected spine at ``current``."""
    with torch.no_grad():
        weights = (case.spine_projector(case.nominal.pose(current))[:, 1] > 0).to(torch.float32)
    theta = current.clone().requires_grad_(True)
    moving = case.projector(case.nominal.pose(theta)).sum(dim=1)  # soft tissue + bone line integrals
    (gradient,) = torch.autograd.grad(-REFERENCES[name](fixed[:, 0], moving, weights).sum(), theta)
    return gradient


def agreement(
    model_path: Path, pairs: int, seed: int, offset_sd: tuple[float, float] | None, augment: bool,
    ct: Path | None = None, mask: Path | None = None, one_axis: bool = False, reference: str | None = None,
) -> dict[str, float]:
    """Mean cosines, direction loss and per-axis sign agreement over ``pairs`` pose pairs of ``ct`` (default: the sample CT).

    ``one_axis``: each pair is offset along one axis only (the axes in turn) and each axis is
    scored on its own pairs. ``reference``: score a hand-made similarity of the whole CT's DRR
    (``ncc`` or ``gc``) on the pairs the model would see, instead of the model.
    """
    model = load_model(model_path, device="cpu")
    settings = FineSettings.from_dict(model.metadata["training"]["task"])
    settings = replace(settings, offset_sd=offset_sd or settings.offset_sd, augment=AugmentSettings(enabled=augment))
    task = FineTask([(ct or sample_ct_path(), mask or sample_vertebrae_path())], model.geometry, model.network.config, settings, DistContext())
    network = model.network.requires_grad_(True)  # d L_N / d theta only; the weights are not changed
    learned, geodesic, scored = [], [], []
    for batch in range(pairs // settings.batch_size):
        case, target, current, fixed = task.draw_pairs(torch.Generator().manual_seed(seed + batch))
        axes = torch.ones_like(current)
        if one_axis:
            axes = torch.zeros_like(current)
            axes[torch.arange(len(current)), (batch * settings.batch_size + torch.arange(len(current))) % 6] = 1.0
            current = target + (current - target) * axes
        if reference is None:
            gradient = task.learned_gradients(network, case, current, fixed)[0]
        else:
            gradient = reference_gradients(reference, case, current, fixed)
        learned.append(gradient.detach())
        geodesic.append(geodesic_gradient(current, target).to(gradient))
        scored.append(axes)
    learned, geodesic, scored = torch.cat(learned), torch.cat(geodesic), torch.cat(scored).to(torch.float64)
    rotation, translation = part_cosines(learned, geodesic)
    row = {
        "cosine_rotation": float(rotation.mean()),
        "cosine_translation": float(translation.mean()),
        "direction_loss": float(direction_loss(learned, geodesic).mean()),
    }
    same_sign = ((torch.sign(learned) == torch.sign(geodesic)).to(torch.float64) * scored).sum(dim=0) / scored.sum(dim=0)
    row.update({f"sign_{name}": float(value) for name, value in zip(PARAM_NAMES, same_sign)})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True, help="a fine model (.pt); repeat to compare")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=9000)
    parser.add_argument("--offset-sd", type=float, nargs=2, metavar=("DEG", "MM"), help="start-to-target spread (default: the model's)")
    parser.add_argument("--no-augment", action="store_true", help="clean fixed images")
    parser.add_argument("--ct", type=Path, help="CT of the pairs (default: the sample CT); e.g. one the models never saw")
    parser.add_argument("--mask", type=Path, help="its spine mask (required with --ct)")
    parser.add_argument("--one-axis", action="store_true", help="offset each pair along one axis only; score each axis on its pairs")
    parser.add_argument(
        "--reference", choices=sorted(REFERENCES), action="append", default=[],
        help="also score a hand-made similarity of the whole CT's DRR on the first model's pairs (repeat for several)",
    )
    parser.add_argument("--out", type=Path, help="append the table to this Markdown file")
    args = parser.parse_args()
    if (args.ct is None) != (args.mask is None):
        parser.error("--ct and --mask go together")
    torch.manual_seed(0)
    header = "| model | cosine rotation | cosine translation | direction loss | " + " | ".join(f"same sign {n}" for n in PARAM_NAMES) + " |"
    offsets = "the model's" if args.offset_sd is None else f"N(0, {args.offset_sd[0]:g} deg), N(0, {args.offset_sd[1]:g} mm)"
    lines = [
        f"Pairs: {args.pairs}, seeds from {args.seed}, start-to-target offsets {offsets}, "
        f"{'one axis per pair, ' if args.one_axis else ''}augmentation {'off' if args.no_augment else 'on'}, CT {args.ct or sample_ct_path().name}.", "", header, "|" + "---|" * (4 + len(PARAM_NAMES)),
    ]
    offset_sd = tuple(args.offset_sd) if args.offset_sd else None
    scorers = [(path.stem, path, None) for path in args.model]
    scorers += [(f"{name} of the whole CT's DRR (reference)", args.model[0], name) for name in args.reference]
    for label, path, reference in scorers:
        row = agreement(path, args.pairs, args.seed, offset_sd, not args.no_augment, args.ct, args.mask, args.one_axis, reference)
        signs = " | ".join(f"{100 * row['sign_' + n]:.0f} %" for n in PARAM_NAMES)
        lines.append(f"| {label} | {row['cosine_rotation']:.2f} | {row['cosine_translation']:.2f} | {row['direction_loss']:.2f} | {signs} |")
        print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
