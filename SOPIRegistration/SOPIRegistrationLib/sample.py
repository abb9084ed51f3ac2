"""The shipped sample case as MRML nodes: the sample CT, its vertebrae, and the X-ray
simulated from it (``scripts/make_sample_xray.py``) with its true pose."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from . import nodes
from .frames import RAS_FROM_LPS

__all__ = ["SampleCase", "load_sample_case", "mask_points_world", "sample_files", "xray_node_from_file"]


@dataclass
class SampleCase:
    ct_node: object
    xray_node: object
    vertebrae: object  # sopi Volume: the label map on the CT grid (for checking a segmentation)
    true_camera_from_world: np.ndarray  # 4x4, the engine's convention (CT LPS -> camera)


def sample_files() -> dict[str, object]:
    """Paths of the sample CT, vertebra labels, X-ray and its true pose."""
    from sopi.sample_data import sample_ct_path, sample_data_dir, sample_vertebrae_path

    return {
        "ct": sample_ct_path(),
        "vertebrae": sample_vertebrae_path(),
        "xray": sample_data_dir() / "sample_xray.mha",
        "truth": sample_data_dir() / "sample_xray_truth.json",
    }


def xray_node_from_file(path, scene, name: str = "X-ray"):
    """An X-ray file as a single-slice volume node, placed as Slicer's volume reader places it
    (the file's LPS origin, spacing and direction turned into RAS); the raw pixel values."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).reshape(image.GetSize()[1], image.GetSize()[0])
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(2, 2)
    lps_from_ijk = np.eye(4)
    lps_from_ijk[:2, :2] = direction * np.array(image.GetSpacing())[None, :]
    lps_from_ijk[:2, 3] = image.GetOrigin()
    return nodes.image_to_node(array, RAS_FROM_LPS @ lps_from_ijk, scene, name)


def load_sample_case(scene) -> SampleCase:
    """Add the sample CT and X-ray to ``scene``."""
    from sopi.io import read_ct, read_label_map

    files = sample_files()
    ct = read_ct(files["ct"])
    ct_node = nodes.volume_to_node(ct, scene, "SOPI sample CT")
    xray_node = xray_node_from_file(files["xray"], scene, "SOPI sample X-ray")
    truth = json.loads(files["truth"].read_text(encoding="utf-8"))
    vertebrae = read_label_map(files["vertebrae"], reference=ct)
    return SampleCase(ct_node, xray_node, vertebrae, np.array(truth["matrix"], dtype=np.float64))


def mask_points_world(mask, every: int = 20) -> torch.Tensor:
    """Every ``every``-th voxel centre of a mask (LPS mm), for target registration errors."""
    index = torch.nonzero(mask.data != 0)[::every, [2, 1, 0]].to(torch.float64)
    return index @ mask.world_from_index[:3, :3].T + mask.world_from_index[:3, 3]
