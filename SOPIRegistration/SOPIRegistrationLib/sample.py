"""The shipped sample case as MRML nodes: the sample CT, its vertebrae, and the X-ray
simulated from it (``scripts/make_sample_xray.py``) with its true pose."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import nodes
from .frames import RAS_FROM_LPS

__all__ = ["SampleCase", "load_sample_case", "xray_node_from_file"]


@dataclass
class SampleCase:
    ct_node: object
    xray_node: object
    vertebrae: object  # sopi Volume: the label map on the CT grid (for checking a segmentation)
    true_camera_from_world: np.ndarray  # 4x4, the engine's convention (CT LPS -> camera)


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
    from sopi.geometry import load_pose
    from sopi.sample_data import load_sample, sample_data_dir

    ct, vertebrae = load_sample()
    ct_node = nodes.volume_to_node(ct, scene, "SOPI sample CT")
    xray_node = xray_node_from_file(sample_data_dir() / "sample_xray.mha", scene, "SOPI sample X-ray")
    truth = load_pose(sample_data_dir() / "sample_xray_truth.json").numpy()
    return SampleCase(ct_node, xray_node, vertebrae, truth)
