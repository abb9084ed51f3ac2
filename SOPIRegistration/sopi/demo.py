"""``make demo``: DRRs of the bundled sample CT and a registration of a simulated X-ray."""

from __future__ import annotations

from pathlib import Path

import torch

from .geometry import CArmGeometry, nominal_view, save_pose

__all__ = ["run_demo"]


def run_demo(out_dir: str | Path = "demo_output", device: torch.device | str = "cpu") -> list[Path]:
    """Render the sample CT, then register a simulated X-ray of it.

    Writes per view a DRR (``drr_<view>.png`` and ``.mha``), a spine-only DRR
    (``spine_<view>.png``), the pose (``pose_<view>.json``), plus ``geometry.json``
    and a panel of all four images (``drr_views.png``). Then simulates ``xray.mha`` at a
    random pose (true pose in ``gt.json``), registers it with ``sopi+opt`` (the shipped
    RTPI and fine models) from the nominal AP view, prints the errors and time after each
    stage and writes ``result.json`` and ``fused.png``.
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
    written += _registration_demo(out, ct, spine, geometry, isocenter, device)
    return written


def _registration_demo(out: Path, ct, spine, geometry: CArmGeometry, isocenter: torch.Tensor, device) -> list[Path]:
    """Simulate an X-ray at a random pose (paper protocol, seed 0), register it with ``sopi+opt``, report errors per stage."""
    from .atomic import write_json
    from .benchmark import case_metrics, target_points
    from .fusion import write_fused_png
    from .io import write_xray
    from .io_xray import XRay
    from .protocols import get_protocol
    from .registration import register
    from .render import render_drr, rendering_volume
    from .sample_data import sample_fine_model_path, sample_rtpi_model_path

    nominal = nominal_view("ap", isocenter, geometry.source_to_isocenter_mm)
    theta = get_protocol("paper").sample(1, torch.Generator().manual_seed(0))[0]
    truth = nominal.pose(theta)
    volume = rendering_volume(ct, "hu")
    xray = render_drr(volume, geometry, truth, device=device)
    result = register(
        ct, XRay(xray, geometry), initial_pose=nominal.camera_from_world, mask=spine, method="sopi+opt",
        model=sample_rtpi_model_path(), fine_model=sample_fine_model_path(), device=device,
    )
    points = target_points(spine)
    rows = [("initial (nominal AP view)", nominal.camera_from_world, 0.0)]
    rows += [
        (f"after {record['stage']}", nominal.pose(torch.tensor(list(record["params"].values()), dtype=torch.float64)), record["time_s"])
        for record in result.stages
    ]
    for label, pose, seconds in rows:
        metrics = case_metrics(pose, truth, nominal, geometry, points)
        print(
            f"{label:26s} rotation {metrics.paper_rotation_deg:6.2f} deg  translation {metrics.paper_translation_mm:6.2f} mm"
            f"  mTRE {metrics.mtre_mm:6.2f} mm  ({seconds:.2f} s)"
        )
    print("(rotation and translation: the paper's summed per-axis errors)")
    print(f"registration took {result.time_s:.1f} s")
    write_xray(out / "xray.mha", xray, geometry)
    save_pose(out / "gt.json", truth, note="true pose of xray.mha (the registration never saw it)")
    result_path = out / "result.json"
    write_json(result_path, result.to_dict())
    fused_path = out / "fused.png"
    write_fused_png(fused_path, xray, render_drr(volume, geometry, result.camera_from_world, device=device))
    return [out / "xray.mha", out / "gt.json", result_path, fused_path]


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
