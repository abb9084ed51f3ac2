"""What the clinician looks at: the DRR fused over the X-ray in the slice views, and the
C-arm (source and principal ray) in the 3D view. Headless MRML only; the module's widget
adds what needs the application (fitting views to the window)."""

from __future__ import annotations

import numpy as np
import torch

from sopi.fusion import checkerboard, edge_overlay
from sopi.io_xray import resize_image

from . import nodes
from .inputs import mark_output

__all__ = ["FUSION_MODES", "MASK_LABELS", "align_slice_to_image", "place_in_carm", "show_carm", "show_fusion", "show_xray_mask", "xray_mask_labels"]

#: ``blend``: the DRR as the foreground layer at the chosen opacity; ``checkerboard``:
#: alternating tiles of X-ray and DRR; ``edges``: the DRR's edges drawn over the X-ray.
FUSION_MODES = ("blend", "checkerboard", "edges")


def align_slice_to_image(slice_node, image_node) -> None:
    """Turn a slice view onto a single-slice image's plane, centred on it, shown as the file
    shows it: column 0 on the left, row 0 at the top."""
    ras_from_ijk = nodes.node_ras_from_ijk(image_node)
    columns, rows, _ = image_node.GetImageData().GetDimensions()
    column_axis = ras_from_ijk[:3, 0] / np.linalg.norm(ras_from_ijk[:3, 0])
    row_axis = ras_from_ijk[:3, 1] / np.linalg.norm(ras_from_ijk[:3, 1])
    normal = -np.cross(column_axis, row_axis)  # screen x = columns, screen y (up) = -rows
    centre = ras_from_ijk @ np.array([(columns - 1) / 2.0, (rows - 1) / 2.0, 0.0, 1.0])
    slice_node.SetSliceToRASByNTP(*normal, *column_axis, *centre[:3], 0)


def _composite_nodes(scene, layouts):
    found = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if layouts is None or node.GetLayoutName() in layouts:
            found.append(node)
    return found


def _slice_node(scene, layout_name: str):
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
        if node.GetLayoutName() == layout_name:
            return node
    return None


def show_fusion(scene, xray_node, drr_node, opacity: float = 0.5, mode: str = "blend", fusion_node=None,
                layouts: tuple[str, ...] | None = ("Red",)):
    """Show the DRR over the X-ray in the slice views named ``layouts`` (all if None).

    Returns the derived image node that ``checkerboard`` and ``edges`` display as the
    background (``fusion_node`` is reused), or None for ``blend``."""
    if mode not in FUSION_MODES:
        raise ValueError(f"fusion mode {mode!r} is not one of {FUSION_MODES}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"foreground opacity must lie in [0, 1], got {opacity}")
    background, foreground = xray_node, drr_node
    if mode != "blend":
        xray = torch.from_numpy(nodes.xray_image_from_node(xray_node))
        resized = resize_image(torch.from_numpy(nodes.xray_image_from_node(drr_node)), tuple(xray.shape))
        image = checkerboard(xray, resized) if mode == "checkerboard" else edge_overlay(xray, resized)
        fusion_node = mark_output(nodes.image_to_node(
            image, nodes.node_ras_from_ijk(xray_node), scene, f"{xray_node.GetName()} {mode}", fusion_node
        ))
        background, foreground = fusion_node, None
    for composite in _composite_nodes(scene, layouts):
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(float(opacity))
        slice_node = _slice_node(scene, composite.GetLayoutName())
        if slice_node is not None:
            align_slice_to_image(slice_node, xray_node)
    return fusion_node if mode != "blend" else None


def show_carm(scene, scene_from_camera: np.ndarray, sdd_mm: float, marker_node=None, name: str = "C-arm principal ray"):
    """A markups line from the X-ray source to the detector's principal point (the principal
    ray), so the C-arm set-up can be seen in 3D; ``marker_node`` is reused (a new one is called ``name``)."""
    if marker_node is None:
        marker_node = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", scene.GenerateUniqueName(name))
        marker_node.CreateDefaultDisplayNodes()
    source = np.asarray(scene_from_camera, np.float64) @ np.array([0.0, 0.0, 0.0, 1.0])
    detector = np.asarray(scene_from_camera, np.float64) @ np.array([0.0, 0.0, float(sdd_mm), 1.0])
    marker_node.RemoveAllControlPoints()
    marker_node.AddControlPoint(*source[:3], "source")
    marker_node.AddControlPoint(*detector[:3], "detector")
    return marker_node


def place_in_carm(transform_node, placed_nodes, place: bool = True) -> None:
    """Put ``placed_nodes`` (the CT, its spine) under the registration transform, so they sit in
    front of the X-ray where the registered C-arm saw them; ``place=False`` takes them out again,
    but only those under ``transform_node`` (a transform the user set stays). Registration ignores
    these parent transforms (``nodes.volume_from_node``, ``nodes.mask_from_segmentation``)."""
    for node in placed_nodes:
        if node is None:
            continue
        if place and transform_node is not None:
            if node.GetParentTransformNode() is not transform_node:
                node.SetAndObserveTransformNodeID(transform_node.GetID())
        elif transform_node is not None and node.GetParentTransformNode() is transform_node:
            node.SetAndObserveTransformNodeID(None)


#: Label values of :func:`xray_mask_labels` (and their names, for the legend).
MASK_LABELS = {1: "outside the field", 2: "saturated", 3: "metal", 4: "straight instruments (second look)"}


def xray_mask_labels(image: np.ndarray, field_mask: np.ndarray | None = None, instruments: bool = False) -> np.ndarray:
    """``(rows, cols)`` uint8 labels of what registration ignores in a bone-bright X-ray
    (:func:`sopi.xray_prep.prepare_xray`): 1 outside the field, 2 saturated, 3 metal, 0 used. With
    ``instruments`` (the result was judged in the second look at a flagged first result), 4 where the sides of
    straight instruments were dropped too (:func:`sopi.xray_prep.without_straight_instruments`)."""
    from sopi.xray_prep import prepare_xray, without_straight_instruments

    prepared = prepare_xray(torch.from_numpy(np.asarray(image, dtype=np.float32)),
                            None if field_mask is None else torch.from_numpy(np.asarray(field_mask, dtype=bool)))
    labels = np.zeros(prepared.weight.shape, np.uint8)
    if instruments:
        masked = without_straight_instruments(prepared.image, prepared.weight)
        if masked is not None:
            labels[((masked <= 0) & (prepared.weight > 0)).numpy()] = 4
    labels[prepared.outside_field.numpy()] = 1
    labels[prepared.saturated.numpy()] = 2
    labels[prepared.metal.numpy()] = 3
    return labels


def show_xray_mask(scene, xray_node, label_node=None, visible: bool = True, opacity: float = 0.4,
                   layouts: tuple[str, ...] | None = ("Red",), polarity: str = "auto", instruments: bool = False,
                   reading: str | None = None):
    """Overlay (or hide) the regions registration ignores on the X-ray in the slice views ``layouts``.

    ``polarity`` and ``reading`` say how the node's values are read (:func:`.reading.xray_image_as_read`: the
    clinician's polarity, or under ``auto`` the registration's reading); ``instruments`` as in :func:`xray_mask_labels`.
    The label map sits on the X-ray node's own grid (``label_node`` is reused). Returns the
    label node, or None when hidden (an existing one is kept for the next time)."""
    if not visible:
        for composite in _composite_nodes(scene, layouts):
            composite.SetLabelVolumeID(None)
        return label_node
    from .reading import xray_image_as_read

    labels = xray_mask_labels(xray_image_as_read(xray_node, polarity, reading), instruments=instruments)
    label_node = mark_output(nodes.label_image_to_node(labels, xray_node, scene, f"{xray_node.GetName()} ignored", label_node))
    for composite in _composite_nodes(scene, layouts):
        composite.SetLabelVolumeID(label_node.GetID())
        composite.SetLabelOpacity(float(opacity))
    return label_node
