"""Conversions between MRML nodes and the engine's objects (headless: ``slicer-core`` only).

Frames follow ``frames.py``: a CT node's own ``IJKToRAS`` (parent transforms ignored) is the
engine's world, in LPS. Arrays are copied both ways: the engine never holds a view of a
node's memory, so nodes are never modified behind Slicer's back.
"""

from __future__ import annotations

import numpy as np
import slicer
import torch
import vtk
from vtk.util import numpy_support

from sopi.errors import InputError
from sopi.geometry import CArmGeometry
from sopi.volume import Volume

from .frames import LPS_FROM_RAS, RAS_FROM_LPS

__all__ = [
    "image_to_node",
    "label_image_to_node",
    "mask_from_segmentation",
    "matrix_from_vtk",
    "node_ras_from_ijk",
    "own_ras_from_ijk",
    "segmentation_from_mask",
    "set_transform_matrix",
    "transform_matrix",
    "volume_from_node",
    "volume_to_node",
    "vtk_from_matrix",
    "world_from_local",
    "xray_geometry",
    "xray_image_from_node",
]

SPINE_SEGMENT_NAME = "spine"
_SPINE_COLOR = (0.95, 0.84, 0.57)


# --------------------------------------------------------------------------- matrices


def matrix_from_vtk(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """A 4x4 numpy float64 copy of a ``vtkMatrix4x4``."""
    return np.array([[matrix.GetElement(row, col) for col in range(4)] for row in range(4)], dtype=np.float64)


def vtk_from_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A ``vtkMatrix4x4`` holding a 4x4 array."""
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            matrix.SetElement(row, col, float(array[row, col]))
    return matrix


def _ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix_from_vtk(matrix)


def own_ras_from_ijk(node) -> np.ndarray:
    """A volume node's own ``IJKToRAS`` (its parent transform not applied): the engine's world for a CT."""
    return _ijk_to_ras(node)


def world_from_local(node) -> np.ndarray:
    """The scene's RAS from a transformable node's own coordinates: its parent transforms (linear only)."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise InputError(f"{node.GetName()}: its parent transform is not linear; harden or remove it first")
    world_from_parent = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(world_from_parent)
    return matrix_from_vtk(world_from_parent)


def node_ras_from_ijk(node) -> np.ndarray:
    """A volume node's ``IJKToRAS`` in the scene's world: its parent transform (linear only) applied."""
    return world_from_local(node) @ _ijk_to_ras(node)


def transform_matrix(node) -> np.ndarray:
    """A linear transform node's ``ToParent`` matrix."""
    matrix = vtk.vtkMatrix4x4()
    node.GetMatrixTransformToParent(matrix)
    return matrix_from_vtk(matrix)


def set_transform_matrix(node, array: np.ndarray) -> None:
    """Set a linear transform node's ``ToParent`` matrix."""
    node.SetMatrixTransformToParent(vtk_from_matrix(np.asarray(array, dtype=np.float64)))


# --------------------------------------------------------------------------- volumes


def _require_volume(node, what: str):
    if node is None:
        raise InputError(f"{what}: no volume node given")
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{what}: {node.GetName()!r} is a {node.GetClassName()}; expected a scalar volume node")
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"{what}: {node.GetName()!r} holds no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"{what}: {node.GetName()!r} has {image.GetNumberOfScalarComponents()} components per voxel; expected 1")
    return image


def _node_array(node, what: str) -> np.ndarray:
    """A (K, J, I) copy of a volume node's voxels, in their own dtype."""
    image = _require_volume(node, what)
    columns, rows, slices = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(slices, rows, columns).copy()


def volume_from_node(node, what: str = "CT") -> Volume:
    """The engine's :class:`Volume` (float32 HU, LPS world) of a scalar volume node."""
    array = _node_array(node, what)
    if array.shape[0] < 2:
        raise InputError(f"{what}: {node.GetName()!r} is a single slice {array.shape[1:]}; expected a 3D CT")
    if not np.isfinite(array).all():
        raise InputError(f"{what}: {node.GetName()!r} holds NaN or infinite values")
    return Volume(torch.from_numpy(array.astype(np.float32)), torch.from_numpy(LPS_FROM_RAS @ _ijk_to_ras(node)))


def _fill_image(image, array: np.ndarray):
    """Give a ``vtkImageData`` (or ``vtkOrientedImageData``) the ``(K, J, I)`` array's size and a copy of its voxels."""
    slices, rows, columns = array.shape
    image.SetDimensions(columns, rows, slices)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True))
    return image


def _set_image(node, array: np.ndarray, ras_from_ijk: np.ndarray) -> None:
    image = _fill_image(vtk.vtkImageData(), array)
    node.SetIJKToRASMatrix(vtk_from_matrix(ras_from_ijk))
    node.SetAndObserveImageData(image)


def _new_or_given(scene, node, class_name: str, name: str):
    if node is not None:
        return node
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    node.CreateDefaultDisplayNodes()
    return node


def volume_to_node(volume: Volume, scene, name: str, node=None):
    """A scalar volume node (RAS) holding ``volume``'s voxels (dtype kept); a new one unless ``node`` is given."""
    node = _new_or_given(scene, node, "vtkMRMLScalarVolumeNode", name)
    _set_image(node, volume.data.cpu().numpy(), RAS_FROM_LPS @ volume.world_from_index.numpy())
    return node


def image_to_node(image: np.ndarray, ras_from_ijk: np.ndarray, scene, name: str, node=None):
    """A single-slice scalar volume node holding a ``(rows, cols)`` image at ``ras_from_ijk``."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise InputError(f"{name}: expected a (rows, cols) image, got shape {array.shape}")
    node = _new_or_given(scene, node, "vtkMRMLScalarVolumeNode", name)
    _set_image(node, array[None], ras_from_ijk)
    display = node.GetDisplayNode()
    if display is not None:
        display.AutoWindowLevelOn()
    return node


# --------------------------------------------------------------------------- X-ray


def label_image_to_node(labels: np.ndarray, like_node, scene, name: str, node=None):
    """A single-slice label map node holding ``(rows, cols)`` labels on ``like_node``'s grid and under its parent transform."""
    array = np.asarray(labels)
    if array.ndim != 2:
        raise InputError(f"{name}: expected (rows, cols) labels, got shape {array.shape}")
    node = _new_or_given(scene, node, "vtkMRMLLabelMapVolumeNode", name)
    _set_image(node, array[None], own_ras_from_ijk(like_node))
    node.SetAndObserveTransformNodeID(like_node.GetTransformNodeID())
    return node


def xray_image_from_node(node) -> np.ndarray:
    """The ``(rows, cols)`` float32 image of a single-slice X-ray node (rows along ``j``, columns along ``i``)."""
    array = _node_array(node, "X-ray")
    if array.shape[0] != 1:
        raise InputError(f"X-ray: {node.GetName()!r} has {array.shape[0]} slices; expected a single-slice 2D image")
    if not np.isfinite(array).all():
        raise InputError(f"X-ray: {node.GetName()!r} holds NaN or infinite values")
    return array[0].astype(np.float32)


def xray_geometry(
    node,
    sdd_mm: float,
    pixel_spacing_mm: tuple[float, float] | None = None,
    source_to_isocenter_mm: float | None = None,
) -> CArmGeometry:
    """The detector geometry of an X-ray node: its size, and its spacing unless ``pixel_spacing_mm`` is given."""
    image = _require_volume(node, "X-ray")
    columns, rows, _ = image.GetDimensions()
    spacing = pixel_spacing_mm if pixel_spacing_mm is not None else tuple(node.GetSpacing()[:2])
    return CArmGeometry(sdd_mm, rows, columns, tuple(spacing), source_to_isocenter_mm=source_to_isocenter_mm)


# --------------------------------------------------------------------------- segmentations


def _oriented_reference(ct_node):
    reference = slicer.vtkOrientedImageData()
    columns, rows, slices = ct_node.GetImageData().GetDimensions()
    reference.SetExtent(0, columns - 1, 0, rows - 1, 0, slices - 1)
    reference.SetImageToWorldMatrix(vtk_from_matrix(_ijk_to_ras(ct_node)))
    return reference


def _local_from_other(node, other) -> np.ndarray | None:
    """``node``'s own coordinates from ``other``'s (their parent transforms), or None when they coincide."""
    if node.GetParentTransformNode() is other.GetParentTransformNode():
        return None
    matrix = np.linalg.inv(world_from_local(node)) @ world_from_local(other)
    return None if np.allclose(matrix, np.eye(4), atol=1e-12) else matrix


def mask_from_segmentation(segmentation_node, ct_node, segment_ids: list[str] | None = None) -> Volume:
    """The union of a segmentation's segments (all, or ``segment_ids``) as a 0/1 uint8 mask on the CT's grid."""
    if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise InputError("spine segmentation: expected a segmentation node")
    segmentation = segmentation_node.GetSegmentation()
    if segment_ids is None:
        ids = vtk.vtkStringArray()
        segmentation.GetSegmentIDs(ids)
        segment_ids = [ids.GetValue(index) for index in range(ids.GetNumberOfValues())]
    if not segment_ids:
        raise InputError(f"spine segmentation: {segmentation_node.GetName()!r} has no segments")
    _require_volume(ct_node, "CT")
    reference = _oriented_reference(ct_node)
    columns, rows, slices = ct_node.GetImageData().GetDimensions()
    mask = np.zeros((slices, rows, columns), dtype=np.uint8)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    # The CT's grid is its own IJKToRAS (parent ignored, as for the CT's voxels): take the segments in
    # the segmentation's own frame and move them by what lies between the two nodes' parent transforms,
    # so placing both under the registration transform changes nothing.
    ct_from_segmentation = _local_from_other(ct_node, segmentation_node)
    for segment_id in segment_ids:
        if segmentation.GetSegment(segment_id) is None:
            raise InputError(f"spine segmentation: {segmentation_node.GetName()!r} has no segment {segment_id!r}")
        labelmap, resampled = slicer.vtkOrientedImageData(), slicer.vtkOrientedImageData()
        if not logic.GetSegmentBinaryLabelmapRepresentation(segmentation_node, segment_id, labelmap, False):
            raise InputError(f"spine segmentation: segment {segment_id!r} has no binary labelmap")
        if ct_from_segmentation is not None:
            image_to_world = vtk.vtkMatrix4x4()
            labelmap.GetImageToWorldMatrix(image_to_world)
            labelmap.SetImageToWorldMatrix(vtk_from_matrix(ct_from_segmentation @ matrix_from_vtk(image_to_world)))
        if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(labelmap, reference, resampled, False, False):
            raise InputError(f"spine segmentation: segment {segment_id!r} could not be resampled onto the CT grid")
        i0, i1, j0, j1, k0, k1 = resampled.GetExtent()
        if i1 < i0 or j1 < j0 or k1 < k0:
            continue  # the segment lies outside the CT
        values = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars()).reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)
        window = (slice(max(k0, 0), min(k1 + 1, slices)), slice(max(j0, 0), min(j1 + 1, rows)), slice(max(i0, 0), min(i1 + 1, columns)))
        inside = values[window[0].start - k0:window[0].stop - k0, window[1].start - j0:window[1].stop - j0,
                        window[2].start - i0:window[2].stop - i0]
        mask[window] |= (inside != 0).astype(np.uint8)
    if not mask.any():
        raise InputError(f"spine segmentation: {segmentation_node.GetName()!r} is empty inside the CT")
    return Volume(torch.from_numpy(mask), torch.from_numpy(LPS_FROM_RAS @ _ijk_to_ras(ct_node)))


def segmentation_from_mask(mask: Volume, scene, ct_node, name: str = "spine", node=None):
    """A segmentation node with one segment, ``spine``, from a 0/1 mask on the CT's grid."""
    labelmap = _fill_image(slicer.vtkOrientedImageData(), (mask.data.cpu().numpy() != 0).astype(np.uint8))
    node = _new_or_given(scene, node, "vtkMRMLSegmentationNode", name)
    # the mask lies in the CT's own frame; the segmentation keeps its segments in its own frame
    segmentation_from_ct = _local_from_other(node, ct_node)
    ras_from_ijk = RAS_FROM_LPS @ mask.world_from_index.numpy()
    labelmap.SetImageToWorldMatrix(vtk_from_matrix(ras_from_ijk if segmentation_from_ct is None else segmentation_from_ct @ ras_from_ijk))
    node.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(SPINE_SEGMENT_NAME)
    if segment_id:
        node.GetSegmentation().RemoveSegment(segment_id)
    node.AddSegmentFromBinaryLabelmapRepresentation(labelmap, SPINE_SEGMENT_NAME, list(_SPINE_COLOR))
    return node
