"""Which nodes of a scene the module offers as its inputs. MRML only: no torch, so the module can
pick its inputs before the engine's dependencies are installed."""

from __future__ import annotations

__all__ = ["OUTPUT_ATTRIBUTE", "choose_inputs", "mark_output"]

#: Set on the nodes this module creates (DRR, fusion image), so they are never offered as inputs.
OUTPUT_ATTRIBUTE = "SOPIRegistration.Output"


def mark_output(node):
    """Mark a node as one of the module's outputs; returns it."""
    node.SetAttribute(OUTPUT_ATTRIBUTE, "1")
    return node


def _is_candidate(node) -> bool:
    image = node.GetImageData()
    return (image is not None and not node.IsA("vtkMRMLLabelMapVolumeNode") and node.GetAttribute(OUTPUT_ATTRIBUTE) is None
            and image.GetNumberOfScalarComponents() == 1)


def choose_inputs(scene, ct_node=None, xray_node=None):
    """``(ct_node, xray_node)``: those given, else the first scalar volume of the scene with several
    slices (CT) and the first with one slice (X-ray). Label maps, multi-component (colour) images
    and the module's own outputs are never chosen."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if not _is_candidate(node):
            continue
        slices = node.GetImageData().GetDimensions()[2]
        if slices == 1 and xray_node is None:
            xray_node = node
        elif slices > 1 and ct_node is None:
            ct_node = node
    return ct_node, xray_node
