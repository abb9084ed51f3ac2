"""The README's fused-view picture, made headlessly from the nodes the module writes.

Loads the sample case into an MRML scene (slicer-core), segments the spine and registers it
with ``sopi+opt`` through ``SOPIRegistrationLib``, then draws the X-ray node and the DRR
node (start pose and registered pose) with the engine's fusion (``sopi.fusion``: X-ray grey,
DRR orange, DRR edges green) and the module's checkerboard mode.
Writes ``docs/images/slicer_fusion.png``. Run from the repository root with the project venv.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "SOPIRegistration"))

import numpy as np  # noqa: E402
import slicer  # noqa: E402
import torch  # noqa: E402
from SOPIRegistrationLib import RegistrationLogic, nodes  # noqa: E402
from SOPIRegistrationLib.sample import load_sample_case  # noqa: E402


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sopi.benchmark import target_points
    from sopi.distances import mtre_mm

    from sopi.fusion import checkerboard, fused_overlay

    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    logic = RegistrationLogic(scene)
    segmentation = logic.segment_spine(case.ct_node)
    registration = logic.register(case.ct_node, case.xray_node, segmentation_node=segmentation, method="sopi+opt", device="cpu")
    points = target_points(case.vertebrae)
    truth = torch.from_numpy(case.true_camera_from_world)
    xray = torch.from_numpy(nodes.xray_image_from_node(case.xray_node))

    def error() -> float:
        return float(mtre_mm(torch.from_numpy(logic.camera_from_world(registration.transform_node)), truth, points))

    def drr() -> torch.Tensor:
        return torch.from_numpy(nodes.xray_image_from_node(registration.drr_node))

    grey = (np.clip(xray.numpy() / np.percentile(xray.numpy(), 99.5), 0, 1) * 255).astype(np.uint8)
    panels = [("X-ray (simulated from the sample CT)", np.repeat(grey[..., None], 3, axis=2))]
    logic.set_pose_params(registration.transform_node, -registration.result.params.numpy())  # back to the start pose
    logic.render_drr(case.ct_node, registration.transform_node, drr_node=registration.drr_node, xray_node=case.xray_node)
    start_error = error()
    panels.append((f"DRR at the start pose (mTRE {start_error:.1f} mm)", fused_overlay(xray, drr())))
    logic.reset_pose(registration.transform_node)
    logic.render_drr(case.ct_node, registration.transform_node, drr_node=registration.drr_node, xray_node=case.xray_node)
    panels.append((f"After Register, sopi+opt (mTRE {error():.2f} mm)", fused_overlay(xray, drr())))
    tiles = (checkerboard(xray, drr()) * 255).astype(np.uint8)
    panels.append(("Checkerboard fusion: X-ray / DRR", np.repeat(tiles[..., None], 3, axis=2)))

    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.4), dpi=100)
    for axis, (title, image) in zip(axes, panels):
        axis.imshow(image)
        axis.set_title(title, fontsize=10)
        axis.axis("off")
    figure.tight_layout()
    out = REPO / "docs" / "images" / "slicer_fusion.png"
    figure.savefig(out)
    print(f"wrote {out}: start mTRE {start_error:.2f} mm, registered {error():.3f} mm")


if __name__ == "__main__":
    main()
