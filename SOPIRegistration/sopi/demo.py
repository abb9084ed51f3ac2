"""``make demo``: AP and lateral DRRs of the bundled sample CT."""

from __future__ import annotations

from pathlib import Path

import torch

from .geometry import CArmGeometry, nominal_view, save_pose

__all__ = ["run_demo"]


def run_demo(out_dir: str | Path = "demo_output", device: torch.device | str = "cpu") -> list[Path]:
    """Render the sample CT (full and spine-only) at the nominal AP and lateral views.

    Writes per view a DRR (``drr_<view>.png`` and ``.mha``), a spine-only DRR
    (``spine_<view>.png``), the pose (``pose_<view>.json``), plus ``geometry.json``
    and a panel of all four images (``drr_views.png``).
    """
    from .io import mask_from_labels, write_xray
    from .render import render_drr, rendering_volume
    from .sample_data import load_sample
    from .segment import mask_centroid_world

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ct, vertebrae = load_sample()
    spine = mask_from_labels(vertebrae)
    isocenter = mask_centroid_world(spine)
    geometry = CArmGeometry.preset("perlove-plx118f")
    full_volume = rendering_volume(ct, "hu")
    spine_volume = rendering_volume(ct, "hu", mask=spine)
    written = [out / "geometry.json"]
    geometry.save(written[0])
    panels = []
    for view in ("ap", "lateral"):
        nominal = nominal_view(view, isocenter, geometry.source_to_isocenter_mm)
        pose = nominal.camera_from_world
        image = render_drr(full_volume, geometry, pose, device=device)
        spine_image = render_drr(spine_volume, geometry, pose, device=device)
        save_pose(out / f"pose_{view}.json", pose, view=view, isocenter_world_mm=isocenter.tolist())
        write_xray(out / f"drr_{view}.mha", image, geometry)
        write_xray(out / f"drr_{view}.png", image, geometry)
        write_xray(out / f"spine_{view}.png", spine_image, geometry)
        written += [out / f"pose_{view}.json", out / f"drr_{view}.mha", out / f"drr_{view}.png", out / f"spine_{view}.png"]
        panels += [(f"DRR, {view}", image), (f"spine only, {view}", spine_image)]
    written.append(_save_panel(out / "drr_views.png", panels))
    return written


def _save_panel(path: Path, panels: list[tuple[str, torch.Tensor]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_path

    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for axis, (title, image) in zip(axes, panels):
        axis.imshow(image.numpy(), cmap="gray")
        axis.set_title(title, fontsize=10)
        axis.axis("off")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
    return path
