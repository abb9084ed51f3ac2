"""The files an engine job reads and writes in its temporary folder (see ``process.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from sopi.io_xray import XRay
from sopi.volume import Volume

from .process import job_folder

__all__ = ["read_mask", "remove_folder", "result_from_dict", "write_inputs", "write_volume"]


def write_volume(path: Path, volume: Volume) -> None:
    """An uncompressed MHA (quick for a large CT; the job folder is temporary)."""
    import SimpleITK as sitk

    sitk.WriteImage(volume.to_sitk(), str(path), False)


def read_mask(path: Path, ct: Volume) -> Volume:
    """The 0/1 uint8 mask an engine process wrote on the CT's grid."""
    from sopi.io import read_label_map

    labels = read_label_map(path, reference=ct)
    return Volume((labels.data != 0).to(torch.uint8), ct.world_from_index)


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def result_from_dict(data: dict):
    """The :class:`sopi.registration.RegistrationResult` of a ``sopi register`` result JSON."""
    from sopi.geometry import PARAM_NAMES
    from sopi.registration import RegistrationResult

    return RegistrationResult(
        camera_from_world=torch.tensor(data["matrix"], dtype=torch.float64),
        params=torch.tensor([data["params"][name] for name in PARAM_NAMES], dtype=torch.float64),
        method=data["method"], time_s=float(data["time_s"]), similarity=float(data["similarity"]),
        iterations=int(data["iterations"]), converged=bool(data["converged"]),
        pivot_world=torch.tensor(data["pivot_world_mm"], dtype=torch.float64), stages=list(data.get("stages", [])),
        confidence=float(data.get("confidence", float("nan"))), likely_failed=bool(data.get("likely_failed", True)),
        confidence_details=dict(data.get("confidence_details", {})), mask_source=str(data.get("mask_source", "")),
        xray_preparation=dict(data.get("xray_preparation", {})), ct_binned_by=tuple(data.get("ct_binned_by", (1, 1, 1))),
    )


def write_inputs(root, ct: Volume, mask: Volume | None = None, xray: XRay | None = None,
                 initial_pose: torch.Tensor | None = None) -> Path:
    """A new job folder holding ``ct.mha`` (and ``mask.mha``, ``xray.mha`` with ``geometry.json``, ``init.json``)."""
    from sopi.geometry import save_pose
    from sopi.io_xray import write_xray

    folder = job_folder(root)
    try:
        write_volume(folder / "ct.mha", ct)
        if mask is not None:
            write_volume(folder / "mask.mha", mask)
        if xray is not None:
            write_xray(folder / "xray.mha", xray.image, xray.geometry)
            xray.geometry.save(folder / "geometry.json")
        if initial_pose is not None:
            save_pose(folder / "init.json", initial_pose)
    except BaseException:
        remove_folder(folder)
        raise
    return folder
