"""Synthetic registration cases: a DRR at a random pose about a nominal view."""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import write_json
from .errors import InputError
from .geometry import CArmGeometry, NominalView, nominal_view, params_to_dict, save_pose
from .protocols import get_protocol
from .render import render_drr, rendering_volume
from .volume import Volume

__all__ = ["case_poses", "simulate_case", "simulate_cases", "simulate_views"]


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
    realistic: bool = False,
    raw_output: bool = False,
    case: int = 0,
    cases: int = 1,
) -> list[Path]:
    """Write ``xray.mha``, ``geometry.json``, ``gt.json`` and ``init.json`` into ``out_dir``.

    The isocentre is the mask's centroid when a mask is given, else the CT's centre.
    ``gt.json`` holds the true ``camera_from_world`` and its paper parameters relative
    to the nominal view; ``init.json`` holds the nominal view (what a registration
    starts from). The case is case ``case`` of ``sopi benchmark --cases cases`` with the same
    protocol, seed and mask. ``realistic`` simulates an intra-operative X-ray (:mod:`sopi.xray_physics`)
    and adds ``realism.json`` with the drawn physics; ``raw_output`` (with ``realistic``)
    writes raw detector counts, bone dark, to be registered with polarity ``intensity``.
    Everything is computed before the first file is written; each file is written atomically.
    """
    from .io import write_xray

    if raw_output and not realistic:
        raise InputError("--raw: raw detector counts come from the realistic simulation; add --realistic")
    out = Path(out_dir)
    names = ["xray.mha", "geometry.json", "gt.json", "init.json"] + (["realism.json"] if realistic else [])
    get_protocol(protocol)  # a clear error before the CT is read
    _check_case(case, cases)
    ct, spine = _read_case_inputs(ct_path, mask_path, out, names)
    isocenter = _isocenter(ct, spine)
    nominal = nominal_view(view, isocenter, geometry.source_to_isocenter_mm)
    thetas, images, draws = simulate_cases(
        ct, nominal, geometry, protocol, cases, seed, realistic, device, spine=spine, step_mm=step_mm, raw_output=raw_output, count=case + 1
    )
    theta, image = thetas[case], images[case]
    true_pose = nominal.pose(theta)

    out.mkdir(parents=True, exist_ok=True)
    common = {"view": view, "isocenter_world_mm": isocenter.tolist(), "ct": str(ct_path)}
    write_xray(out / "xray.mha", image, geometry)
    geometry.save(out / "geometry.json")
    save_pose(out / "gt.json", true_pose, params=params_to_dict(theta), protocol=protocol, seed=seed, realistic=realistic, case=case,
              cases=cases, **common)
    save_pose(out / "init.json", nominal.camera_from_world, params=params_to_dict(torch.zeros(6)), **common)
    if realistic:
        polarity = "intensity" if raw_output else "bone-bright"
        record = {"seed": seed, "case": case, "cases": cases, "polarity": polarity, "draw": draws[case],
                  "note": "parameters and their sources: docs/xray_realism.md; register with --polarity " + polarity}
        write_json(out / "realism.json", record)
    return [out / name for name in names]


def simulate_cases(
    ct: Volume,
    nominal: NominalView,
    geometry: CArmGeometry,
    protocol: str,
    cases: int,
    seed: int,
    realistic: bool = False,
    device: torch.device | str = "cpu",
    spine: Volume | None = None,
    step_mm: float = 1.0,
    raw_output: bool = False,
    count: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """``(theta (N, 6), images (N, rows, cols), realism draws)`` for ``cases`` seeded cases.

    The draws depend on ``cases`` as well as on the seed. ``count``: only the first ``count`` of the
    ``cases`` drawn are rendered and returned (the same as theirs among all ``cases``; default all).

    ``realistic`` draws the physics of :mod:`sopi.xray_physics` per case (two materials,
    instruments, collimation and field of view, scatter, quantum noise, detector blur,
    read-out); the poses are the same as without it for the same seed. Protocols drawn
    ``along_spine`` need ``spine``; their ``theta`` are still relative to ``nominal``.
    ``step_mm`` is the ray-marching step (mm); ``raw_output`` (realistic only) gives raw
    detector counts (bone dark) instead of the log image, from the same draws.
    """
    from .drr import Projector
    from .xray_physics import draw_realism, material_volume, simulate_xray

    thetas = case_poses(nominal, protocol, cases, seed, spine)[:count]
    realism, noise = _realism_streams(seed)
    if realistic:
        projector = Projector(material_volume(ct), geometry, step_mm=step_mm).to(device)
    else:
        clean = rendering_volume(ct, "hu")
    images, draws = [], []
    for theta in thetas:
        pose = nominal.pose(theta)
        if realistic:
            draw = draw_realism(realism, geometry, raw_output=raw_output)
            image = simulate_xray(projector, geometry, pose, draw, noise, device=device)
            draws.append(draw.to_dict())
        else:
            image = render_drr(clean, geometry, pose, step_mm=step_mm, device=device)
            draws.append({})
        images.append(image)
    return thetas, torch.stack(images), draws


def _realism_streams(seed: int, view: int = 0) -> tuple[torch.Generator, torch.Generator]:
    """The seeded streams of view ``view``'s realism draws and of its quantum noise: apart from the poses' stream
    (the same poses with or without realism) and from each other (the same draws at any dose); view ``k`` offsets
    both by ``1000 k``."""
    return (torch.Generator().manual_seed(seed + 7919 + 1000 * view),
            torch.Generator().manual_seed(seed + 15485863 + 1000 * view))


def other_view_images(
    ct: Volume,
    geometries: list[CArmGeometry],
    truths: torch.Tensor,
    seed: int,
    realistic: bool = False,
    device: torch.device | str = "cpu",
    step_mm: float = 1.0,
) -> tuple[list[list[torch.Tensor]], list[list[dict]]]:
    """Per case, the X-rays ``(rows, cols)`` of the views after the first, and their realism draws (``{}`` for a
    DRR): view ``k`` (``geometries[k - 1]``, placed by its ``view_from_reference``) sees view 0's ``(N, 4, 4)`` true
    poses ``truths``.

    ``realistic`` draws each view's physics as :func:`simulate_cases` draws view 0's, from its own seeded streams
    (:func:`_realism_streams` of view ``k``): another shot of the same patient, with its own instruments,
    collimation, scatter and noise. Otherwise clean DRRs."""
    from .drr import Projector
    from .xray_physics import draw_realism, material_volume, simulate_xray

    images: list[list[torch.Tensor]] = [[] for _ in range(len(truths))]
    draws: list[list[dict]] = [[] for _ in range(len(truths))]
    clean = None if realistic else rendering_volume(ct, "hu")
    materials = material_volume(ct) if realistic else None
    for number, geometry in enumerate(geometries, start=1):
        if realistic:
            projector = Projector(materials, geometry, step_mm=step_mm).to(device)
            realism, noise = _realism_streams(seed, number)
        for index, truth in enumerate(truths):
            pose = geometry.reference_transform() @ truth.to(torch.float64)
            if realistic:
                draw = draw_realism(realism, geometry)
                images[index].append(simulate_xray(projector, geometry, pose, draw, noise, device=device))
                draws[index].append(draw.to_dict())
            else:
                images[index].append(render_drr(clean, geometry, pose, step_mm=step_mm, device=device))
                draws[index].append({})
    return images, draws


def case_poses(nominal: NominalView, protocol: str, cases: int, seed: int, spine: Volume | None = None) -> torch.Tensor:
    """``(cases, 6)`` offsets ``theta`` about ``nominal`` (deg, mm): the poses :func:`simulate_cases` draws for
    ``protocol`` and ``seed``, without rendering anything. Protocols drawn ``along_spine`` need ``spine``."""
    chosen = get_protocol(protocol)
    thetas = chosen.sample(cases, torch.Generator().manual_seed(seed))
    if chosen.along_spine:
        thetas = _along_spine(thetas, nominal, spine, torch.Generator().manual_seed(seed + 104729), chosen.along_spine)
    return thetas


def _along_spine(
    thetas: torch.Tensor, nominal: NominalView, spine: Volume | None, generator: torch.Generator, fraction: float = 1.0
) -> torch.Tensor:
    """``thetas`` taken about spine voxels drawn uniformly (the nominal view moved to each), re-expressed about ``nominal``.

    The voxels are drawn from the central ``fraction`` of the spine's extent along the nominal
    view's rows (head to foot).
    """
    if spine is None:
        raise InputError("a protocol drawn along the spine needs the spine mask")
    voxels = torch.nonzero(spine.data != 0).flip(-1).to(torch.float64)  # (N, 3) as (i, j, k)
    world = voxels @ spine.world_from_index[:3, :3].T + spine.world_from_index[:3, 3]
    along = world @ nominal.camera_from_world[1, :3]  # head-to-foot coordinate (the camera's row axis)
    low, high = float(along.min()), float(along.max())
    margin = (1.0 - fraction) / 2.0 * (high - low)
    world = world[(along >= low + margin) & (along <= high - margin)]
    points = world[torch.randint(len(world), (len(thetas),), generator=generator)]
    moved = []
    for theta, point in zip(thetas, points):
        shift = torch.eye(4, dtype=torch.float64)
        shift[:3, 3] = nominal.isocenter_world - point
        moved.append(nominal.params(NominalView(nominal.camera_from_world @ shift, point).pose(theta)))
    return torch.stack(moved)


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
    realistic: bool = False,
    case: int = 0,
    cases: int = 1,
) -> list[Path]:
    """One patient seen in several nominal views (``["ap", "lateral"]``): per view ``xray_<view>.mha``
    and ``geometry_<view>.json``, plus ``gt.json`` and ``init.json`` for view 0.

    All views share the isocentre (the mask's centroid, else the CT's centre) and the patient's
    pose: the true pose is drawn about view 0's nominal view and view ``k`` sees it through its
    geometry's ``view_from_reference`` (nominal ``k`` from nominal 0; see ``docs/conventions.md``), so a
    protocol drawn along the spine (``far``: needs the mask) moves the whole C-arm along it.
    The case is case ``case`` of ``sopi benchmark --views --cases cases`` with the same protocol, seed and mask; ``realistic`` makes
    every view an intra-operative X-ray with its own draws (:func:`other_view_images`), recorded per view in
    ``realism.json``.
    """
    from .geometry import invert_rigid
    from .io import write_xray

    if len(views) < 2 or len(set(views)) != len(views):
        raise InputError(f"--views {','.join(views)}: expected two or more different views, such as ap,lateral")
    out = Path(out_dir)
    names = [name for view in views for name in (f"xray_{view}.mha", f"geometry_{view}.json")] + ["gt.json", "init.json"]
    names += ["realism.json"] if realistic else []
    if get_protocol(protocol).along_spine and mask_path is None:
        raise InputError(f"--protocol {protocol} draws the X-ray anywhere along the spine: give the spine mask (--mask)")
    _check_case(case, cases)
    ct, spine = _read_case_inputs(ct_path, mask_path, out, names)
    isocenter = _isocenter(ct, spine)
    nominals = [nominal_view(view, isocenter, geometry.source_to_isocenter_mm) for view in views]
    reference = invert_rigid(nominals[0].camera_from_world)
    geometries = [geometry] + [geometry.with_view_from_reference(nominal.camera_from_world @ reference) for nominal in nominals[1:]]
    thetas, first, first_draws = simulate_cases(ct, nominals[0], geometry, protocol, cases, seed, realistic, device, spine=spine, step_mm=step_mm,
                                                count=case + 1)
    # every view's draws are sequential over the cases: the cases before this one are drawn too
    truths = torch.stack([nominals[0].pose(drawn) for drawn in thetas])  # as sopi benchmark --views computes them
    theta, true_pose = thetas[case], truths[case]
    others, other_draws = other_view_images(ct, geometries[1:], truths, seed, realistic, device, step_mm)
    images, draws = [first[case], *others[case]], [first_draws[case], *other_draws[case]]

    out.mkdir(parents=True, exist_ok=True)
    common = {"views": views, "isocenter_world_mm": isocenter.tolist(), "ct": str(ct_path)}
    for view, view_geometry, image in zip(views, geometries, images):
        write_xray(out / f"xray_{view}.mha", image, view_geometry)
        view_geometry.save(out / f"geometry_{view}.json")
    save_pose(out / "gt.json", true_pose, params=params_to_dict(theta), protocol=protocol, seed=seed, realistic=realistic, case=case,
              cases=cases, **common)
    save_pose(out / "init.json", nominals[0].camera_from_world, params=params_to_dict(torch.zeros(6)), **common)
    if realistic:
        write_json(out / "realism.json", {"seed": seed, "case": case, "cases": cases, "polarity": "bone-bright", "draws": dict(zip(views, draws)),
                                          "note": "parameters and their sources: docs/xray_realism.md"})
    return [out / name for name in names]


def _check_case(case: int, cases: int) -> None:
    """A clear error for a case index outside ``0 .. cases - 1``."""
    if cases < 1:
        raise InputError(f"--cases {cases}: expected at least 1")
    if not 0 <= case < cases:
        raise InputError(f"--case {case}: expected 0 to {cases - 1} (the benchmark's case index among --cases {cases})")


def _read_case_inputs(ct_path: str | Path, mask_path: str | Path | None, out: Path, names) -> tuple[Volume, Volume | None]:
    """Check that the files ``names`` in ``out`` overwrite no input; ``(CT, spine mask or None)``."""
    from .io import read_ct, read_mask
    from .validate import check_outputs

    check_outputs({"out": out}, {"ct": ct_path, "mask": mask_path}, folders=("out",))
    check_outputs({f"out ({name})": out / name for name in names}, {"ct": ct_path, "mask": mask_path})
    ct = read_ct(ct_path)
    return ct, (read_mask(mask_path, ct) if mask_path is not None else None)


def _isocenter(ct: Volume, spine: Volume | None) -> torch.Tensor:
    """The spine mask's centroid, else the CT's centre (LPS mm)."""
    if spine is None:
        return ct.center_world
    from .segment import mask_centroid_world

    return mask_centroid_world(spine)
