"""Training CTs: each CT with its spine mask, nominal view, network input cube and projector.

The nominal view looks at the spine centroid (the isocentre that registration pivots
about, see :func:`sopi.registration.register`), so a network's ``theta`` means the same
thing in training and in use.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..drr import Projector
from ..errors import InputError
from ..geometry import CArmGeometry, NominalView, nominal_view
from ..nets.inputs import ct_cube
from ..render import rendering_volume, spine_channels
from ..volume import Volume
from .augmentation import split_bone

__all__ = ["CaseTask", "TrainingCase", "case_pairs", "prepare_case", "prepare_cases", "read_case_list", "voxel_fingerprint"]


@dataclass
class TrainingCase:
    """One CT ready for online simulation at the network's resolution."""

    name: str
    nominal: NominalView
    cube: torch.Tensor | None  # (1, 1, D, D, D) RTPI input (None when not asked for)
    projector: Projector  # soft tissue and bone channels on the training detector
    fingerprint: dict
    spine_projector: Projector | None = None  # the fine module's moving CT (V_seg or the whole CT) and spine mask channels


class CaseTask:
    """What the training tasks share: their cases (``self.cases``) and recorded settings (``self.options``)."""

    cases: list[TrainingCase]
    options: object

    def settings(self) -> dict:
        return self.options.to_dict()

    def training_data(self) -> list[dict]:
        return [case.fingerprint for case in self.cases]

    def draw_case(self, generator: torch.Generator) -> TrainingCase:
        """One training CT, uniformly (population mode), from the run's generator."""
        return self.cases[int(torch.randint(len(self.cases), (1,), generator=generator))]


def voxel_fingerprint(volume: Volume) -> str:
    """First 16 hex digits of the SHA-256 of the voxel bytes and the grid affine (identifies a CT)."""
    digest = hashlib.sha256(volume.data.contiguous().numpy().tobytes())
    digest.update(volume.world_from_index.numpy().tobytes())
    return digest.hexdigest()[:16]


def prepare_case(
    ct: Volume | str | Path,
    mask: Volume | str | Path,
    geometry: CArmGeometry,
    view: str,
    xray_size: int,
    ct_size: int | None,
    ct_side_mm: float,
    step_mm: float,
    device: torch.device,
    name: str | None = None,
    with_spine: bool = False,
    moving_image: str = "spine",
) -> TrainingCase:
    """Load (if paths), binarise the mask, and build everything the training loop renders from.

    ``ct_size=None`` skips the RTPI cube; ``with_spine`` adds the projector of the fine
    module's moving CT (``moving_image``: the spine-only ``V_seg`` or the whole CT) and the mask (``M'``)."""
    from ..io import read_ct, read_label_map
    from ..segment import mask_centroid_world

    ct_volume = ct if isinstance(ct, Volume) else read_ct(ct)
    spine = mask if isinstance(mask, Volume) else read_label_map(mask, reference=ct_volume)
    if tuple(spine.data.shape) != tuple(ct_volume.data.shape):
        raise InputError(f"training case {name or ct}: mask grid {tuple(spine.data.shape)} differs from the CT grid")
    spine = spine.with_data((spine.data != 0).to(torch.float32))
    if float(spine.data.sum()) == 0:
        raise InputError(f"training case {name or ct}: the spine mask is empty")
    nominal = nominal_view(view, mask_centroid_world(spine), geometry.source_to_isocenter_mm)
    attenuation = rendering_volume(ct_volume, "hu")
    cube = None if ct_size is None else ct_cube(attenuation, nominal, ct_size, ct_side_mm, mask=spine)[None].to(device)
    detector = geometry.resized(xray_size, xray_size)
    projector = Projector(split_bone(ct_volume), detector, step_mm=step_mm).to(device)
    fingerprint = {
        "ct": str(ct) if not isinstance(ct, Volume) else name or "in-memory",
        "grid": list(ct_volume.grid_shape),
        "spacing_mm": [round(float(s), 4) for s in ct_volume.spacing],
        "voxels_sha256": voxel_fingerprint(ct_volume),
    }
    spine_projector = None
    if with_spine:
        spine_projector = Projector(spine_channels(attenuation, spine, moving_image), detector, step_mm=step_mm).to(device)
    return TrainingCase(name or fingerprint["ct"], nominal, cube, projector, fingerprint, spine_projector)


def prepare_cases(
    pairs: Sequence[tuple[Volume | str | Path, Volume | str | Path]], *args, with_spine: bool = False, moving_image: str = "spine"
) -> list[TrainingCase]:
    """:func:`prepare_case` for every ``(ct, mask)`` pair (``args`` from ``geometry`` to ``device``);
    in-memory CTs are named ``case0``, ``case1``, ..."""
    return [
        prepare_case(ct, mask, *args, name=f"case{index}" if isinstance(ct, Volume) else None, with_spine=with_spine, moving_image=moving_image)
        for index, (ct, mask) in enumerate(pairs)
    ]


def read_case_list(source: str | Path) -> list[tuple[Path, Path]]:
    """``(ct, mask)`` pairs from a CSV with columns ``ct,mask`` (paths relative to the CSV) or
    from a folder of sub-folders that each hold ``ct.*`` and ``mask.*`` (NIfTI, NRRD or MHA)."""
    source = Path(source)
    if source.is_file():
        with open(source, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"ct", "mask"} <= set(reader.fieldnames):
                raise InputError(f"{source}: expected a CSV with columns 'ct' and 'mask', got {reader.fieldnames}")
            pairs = [(source.parent / row["ct"], source.parent / row["mask"]) for row in reader]
    elif source.is_dir():
        pairs = []
        for folder in sorted(p for p in source.iterdir() if p.is_dir()):
            cts, masks = sorted(folder.glob("ct.*")), sorted(folder.glob("mask.*"))
            if len(cts) == 1 and len(masks) == 1:
                pairs.append((cts[0], masks[0]))
    else:
        raise InputError(f"{source}: no such CSV file or folder")
    if not pairs:
        raise InputError(f"{source}: no (ct, mask) pairs found")
    for ct, mask in pairs:
        for path in (ct, mask):
            if not path.exists():
                raise InputError(f"{source}: {path} does not exist")
    return pairs


def case_pairs(cts: Sequence[str | Path], masks: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """Pair repeated ``--ct`` and ``--mask`` options."""
    if len(cts) != len(masks) or not cts:
        raise InputError(f"give one --mask per --ct (got {len(cts)} CTs and {len(masks)} masks)")
    return [(Path(ct), Path(mask)) for ct, mask in zip(cts, masks)]
