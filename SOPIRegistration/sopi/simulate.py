"""Synthetic registration cases: a DRR at a random pose about a nominal view."""

from __future__ import annotations

from pathlib import Path

import torch

from .geometry import CArmGeometry, nominal_view, params_to_dict, save_pose
from .protocols import get_protocol
from .render import render_drr, rendering_volume

__all__ = ["simulate_case", "simulate_views"]


def simulate_case(
    ct_path: str | Path,
    out_dir: str | Path,
    geometry: CArmGeometry,
    mask_path: str | Path | None = None,
    view: str = "ap",
    protocol: str = "paper",
    seed: int = 0,
    step_mm: float = 1.0,
    device: torch.device | str = "cpu",
) -> list[Path]:
    """Write ``xray.mha``, ``geometry.json``, ``gt.json`` and ``init.json`` into ``out_dir``.

    The isocentre is the mask's centroid when a mask is given, else the CT's centre.
    ``gt.json`` holds the true ``camera_from_world`` and its paper parameters relative
    to the nominal view; ``init.json`` holds the nominal view (what a registration
    starts from). Everything is computed before the first file is written; each file
    is written atomically.
    """
    from .io import write_xray

    out = Path(out_dir)
    names = ("xray.mha", "geometry.json", "gt.json", "init.json")
    nominal_protocol = get_protocol(protocol)
    ct, isocenter = _read_case_inputs(ct_path, mask_path, out, names)
    nominal = nominal_view(view, isocenter, geometry.source_to_isocenter_mm)
    generator = torch.Generator().manual_seed(seed)
    theta = nominal_protocol.sample(1, generator)[0]
    true_pose = nominal.pose(theta)
    image = render_drr(rendering_volume(ct, "hu"), geometry, true_pose, step_mm=step_mm, device=device)

    out.mkdir(parents=True, exist_ok=True)
    common = {"view": view, "isocenter_world_mm": isocenter.tolist(), "ct": str(ct_path)}
    write_xray(out / "xray.mha", image, geometry)
    geometry.save(out / "geometry.json")
    save_pose(out / "gt.json", true_pose, params=params_to_dict(theta), protocol=protocol, seed=seed, **common)
    save_pose(out / "init.json", nominal.camera_from_world, params=params_to_dict(torch.zeros(6)), **common)
    return [out / name for name in names]


def simulate_views(
    ct_path: str | Path,
    out_dir: str | Path,
    geometry: CArmGeometry,
    views: list[str],
    mask_path: str | Path | None = None,
    protocol: str = "paper",
    seed: int = 0,
    step_mm: float = 1.0,
    device: torch.device | str = "cpu",
) -> list[Path]:
    """One patient seen in several nominal views (``["ap", "lateral"]``): per view ``xray_<view>.mha``
    and ``geometry_<view>.json``, plus ``gt.json`` and ``init.json`` for view 0.

    All views share the isocentre (the mask's centroid, else the CT's centre) and the patient's
    pose: the true pose is drawn about view 0's nominal view and view ``k`` sees it through its
    geometry's ``view_from_reference`` (nominal ``k`` from nominal 0; see ``docs/conventions.md``).
    """
    from .errors import InputError
    from .geometry import invert_rigid
    from .io import write_xray

    if len(views) < 2 or len(set(views)) != len(views):
        raise InputError(f"--views {','.join(views)}: expected two or more different views, such as ap,lateral")
    out = Path(out_dir)
    names = [name for view in views for name in (f"xray_{view}.mha", f"geometry_{view}.json")] + ["gt.json", "init.json"]
    nominal_protocol = get_protocol(protocol)
    ct, isocenter = _read_case_inputs(ct_path, mask_path, out, names)
    nominals = [nominal_view(view, isocenter, geometry.source_to_isocenter_mm) for view in views]
    reference = invert_rigid(nominals[0].camera_from_world)
    geometries = [geometry] + [geometry.with_view_from_reference(nominal.camera_from_world @ reference) for nominal in nominals[1:]]
    theta = nominal_protocol.sample(1, torch.Generator().manual_seed(seed))[0]
    true_pose = nominals[0].pose(theta)
    attenuation = rendering_volume(ct, "hu")
    images = [render_drr(attenuation, view_geometry, view_geometry.reference_transform() @ true_pose, step_mm=step_mm, device=device)
              for view_geometry in geometries]

    out.mkdir(parents=True, exist_ok=True)
    common = {"views": views, "isocenter_world_mm": isocenter.tolist(), "ct": str(ct_path)}
    for view, view_geometry, image in zip(views, geometries, images):
        write_xray(out / f"xray_{view}.mha", image, view_geometry)
        view_geometry.save(out / f"geometry_{view}.json")
    save_pose(out / "gt.json", true_pose, params=params_to_dict(theta), protocol=protocol, seed=seed, **common)
    save_pose(out / "init.json", nominals[0].camera_from_world, params=params_to_dict(torch.zeros(6)), **common)
    return [out / name for name in names]


def _read_case_inputs(ct_path: str | Path, mask_path: str | Path | None, out: Path, names) -> tuple:
    """Check that the files ``names`` in ``out`` overwrite no input; ``(CT, isocentre)``: the spine
    mask's centroid, else the CT's centre (LPS mm)."""
    from .io import read_ct, read_mask
    from .validate import check_outputs

    check_outputs({"out": out}, {"ct": ct_path, "mask": mask_path}, folders=("out",))
    check_outputs({f"out ({name})": out / name for name in names}, {"ct": ct_path, "mask": mask_path})
    ct = read_ct(ct_path)
    if mask_path is None:
        return ct, ct.center_world
    from .segment import mask_centroid_world

    return ct, mask_centroid_world(read_mask(mask_path, ct))
