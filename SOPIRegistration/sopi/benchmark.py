"""``sopi benchmark``: simulated cases at known poses, every method, honest metrics.

Cases are DRRs of the given CT at poses drawn from a protocol (offsets of the
paper's parameters from a nominal view about the spine centroid). A method gets
the X-ray, the geometry, the nominal view as its initial pose and the spine mask;
it never sees the true pose. Errors are computed afterwards against it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import InputError
from .distances import mean_projection_distance_mm, mtre_mm, paper_errors, rotation_angle_deg, translation_error_mm
from .geometry import PARAM_NAMES, CArmGeometry, NominalView, nominal_view
from .io import read_ct, read_mask
from .io_xray import XRay
from .simulate import simulate_cases  # noqa: F401  (re-exported: benchmarks import it from here)
from .volume import Volume

__all__ = ["CaseMetrics", "benchmark_cases", "case_metrics", "initial_rows", "result_row", "run_benchmark", "simulate_cases", "target_points", "write_results"]

#: The paper's failure threshold on its summed per-axis errors (deg and mm).
FAILURE_THRESHOLD = 3.0


@dataclass
class CaseMetrics:
    """Errors of one pose estimate against the truth."""

    paper_rotation_deg: float
    paper_translation_mm: float
    failed: bool
    rotation_deg: float
    translation_at_isocenter_mm: float
    mtre_mm: float
    projection_distance_mm: float


def case_metrics(
    estimate: torch.Tensor, truth: torch.Tensor, nominal: NominalView, geometry: CArmGeometry, points_world: torch.Tensor
) -> CaseMetrics:
    """All benchmark metrics of ``estimate`` vs ``truth`` (both ``camera_from_world``)."""
    rotation, translation = paper_errors(nominal.params(estimate), nominal.params(truth))
    return CaseMetrics(
        paper_rotation_deg=float(rotation),
        paper_translation_mm=float(translation),
        failed=bool(rotation >= FAILURE_THRESHOLD or translation >= FAILURE_THRESHOLD),
        rotation_deg=float(rotation_angle_deg(estimate, truth)),
        translation_at_isocenter_mm=float(translation_error_mm(estimate, truth, nominal.isocenter_world)),
        mtre_mm=float(mtre_mm(estimate, truth, points_world)),
        projection_distance_mm=float(mean_projection_distance_mm(estimate, truth, geometry, points_world)),
    )


def target_points(mask: Volume, max_points: int = 4000) -> torch.Tensor:
    """World positions (LPS mm) of up to ``max_points`` spine voxels (a regular subsample)."""
    index = torch.nonzero(mask.data != 0).flip(-1).to(torch.float64)  # (N, 3) as (i, j, k)
    index = index[:: max(1, math.ceil(len(index) / max_points))]
    return index @ mask.world_from_index[:3, :3].T + mask.world_from_index[:3, 3]


def run_benchmark(
    ct_path: str | Path,
    mask_path: str | Path,
    out_dir: str | Path,
    *,
    methods: Sequence[str],
    protocol: str = "paper",
    cases: int = 50,
    seed: int = 0,
    realistic: bool = False,
    view: str = "ap",
    geometry: CArmGeometry | None = None,
    model: str | Path | None = None,
    fine_model: str | Path | None = None,
    device: torch.device | str = "cpu",
    prepare: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Path]:
    """Run every method on every case; write ``results.csv``, ``report.md`` and plots into ``out_dir``.

    ``prepare`` is passed to :func:`sopi.registration.register` (X-ray preparation on or off).
    """
    from .nets.model_file import load_model
    from .registration import get_method, load_networks, register
    from .validate import check_outputs, check_seed

    if not methods:
        raise InputError("methods: no method given; expected one or more names such as opt")
    if not (isinstance(cases, int) and cases >= 1):
        raise InputError(f"cases: expected a positive integer, got {cases!r}")
    check_seed(seed)
    check_outputs({"out": out_dir}, {"ct": ct_path, "mask": mask_path, "model": model, "fine_model": fine_model}, folders=("out",))
    for method in methods:
        get_method(method)  # unknown names fail before any work
    given = {"rtpi": model, "fine": fine_model}
    loaded = {kind: load_model(path, device=device) for kind, path in given.items() if path is not None}  # once, for every case
    for method in methods:
        load_networks(method, loaded, device)  # a missing or wrong model fails before any work
    ct, spine, geometry, nominal, points, thetas, images = benchmark_cases(
        ct_path, mask_path, protocol, cases, seed, realistic, device=device, view=view, geometry=geometry)
    rows = initial_rows(thetas, nominal, geometry, points)
    total, done = cases * len(methods), 0
    for method in methods:
        for index, theta in enumerate(thetas):
            result = register(
                ct, XRay(images[index], geometry), initial_pose=nominal.camera_from_world, mask=spine,
                method=method, model=loaded.get("rtpi"), fine_model=loaded.get("fine"), device=device, seed=seed + index,
                prepare=prepare,
            )
            rows.append(result_row(method, index, theta, result, nominal, geometry, points))
            done += 1
            if progress is not None:
                progress(done, total, f"{method} case {index + 1}/{cases}: mTRE {rows[-1]['mtre_mm']:.2f} mm")
    settings = {
        "ct": str(ct_path), "mask": str(mask_path), "protocol": protocol, "cases": cases, "seed": seed,
        "realistic": realistic, "prepare": prepare, "view": view, "geometry": geometry.to_dict(), "device": str(device),
        "model": None if model is None else str(model), "fine_model": None if fine_model is None else str(fine_model),
    }
    return write_results(rows, out_dir, settings)


def benchmark_cases(
    ct_path: str | Path, mask_path: str | Path, protocol: str, cases: int, seed: int, realistic: bool, *,
    device: torch.device | str = "cpu", view: str = "ap", geometry: CArmGeometry | None = None,
) -> tuple[Volume, Volume, CArmGeometry, NominalView, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The cases :func:`run_benchmark` registers, for scripts that register them otherwise:
    ``(ct, spine, geometry, nominal, points, thetas, images)``: the CT and its spine mask, the C-arm (default the
    paper's), the nominal ``view`` about the spine's centroid every method starts from, the spine points mTRE is
    measured on (world mm), each case's true ``theta`` about ``nominal`` and its X-ray (:func:`simulate_cases`)."""
    from .segment import mask_centroid_world

    geometry = geometry or CArmGeometry.preset("perlove-plx118f")
    ct = read_ct(ct_path)
    spine = read_mask(mask_path, ct)
    nominal = nominal_view(view, mask_centroid_world(spine), geometry.source_to_isocenter_mm)
    thetas, images, _ = simulate_cases(ct, nominal, geometry, protocol, cases, seed, realistic, device, spine=spine)
    return ct, spine, geometry, nominal, target_points(spine), thetas, images


def initial_rows(thetas: Sequence[torch.Tensor], nominal: NominalView, geometry: CArmGeometry, points: torch.Tensor) -> list[dict]:
    """The ``Initial`` rows of ``results.csv``: each case's start (the nominal view) against its true pose ``theta``."""
    return [_row("Initial", index, theta, nominal.camera_from_world, nominal.pose(theta), nominal, geometry, points, 0.0, float("nan"), 0)
            for index, theta in enumerate(thetas)]


def result_row(method: str, index: int, theta: torch.Tensor, result, nominal: NominalView, geometry: CArmGeometry, points: torch.Tensor) -> dict:
    """One ``results.csv`` row: ``result`` (a :class:`sopi.registration.RegistrationResult`) of case ``index``, whose
    true pose is ``theta`` about ``nominal``, scored on ``points`` (LPS mm), with its confidence and renders."""
    row = _row(method, index, theta, result.camera_from_world, nominal.pose(theta), nominal, geometry, points, result.time_s,
               result.similarity, result.iterations)
    row.update(confidence=result.confidence, likely_failed=result.likely_failed)
    row["renders"] = sum(stage.get("renders", 0) for stage in result.stages)
    row.update({f"confidence_{key}": value for key, value in result.confidence_details.items()})
    return row


def write_results(rows: list[dict], out_dir: str | Path, settings: dict) -> list[Path]:
    """Write ``rows`` to ``out_dir/results.csv`` (whole or not at all) and the report of
    :func:`sopi.report.write_report`; return every path written."""
    from .report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    with atomic_path(csv_path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    return [csv_path, *write_report(rows, out, settings)]


def _row(method, index, theta, estimate, truth, nominal, geometry, points, time_s, similarity, iterations) -> dict:
    metrics = case_metrics(estimate, truth, nominal, geometry, points)
    estimate_theta = nominal.params(estimate)
    row = {"method": method, "case": index}
    row.update({f"true_{name}": float(value) for name, value in zip(PARAM_NAMES, theta)})
    row.update({f"est_{name}": float(value) for name, value in zip(PARAM_NAMES, estimate_theta)})
    row.update(vars(metrics))
    row.update({"time_s": time_s, "similarity": similarity, "iterations": iterations})
    return row
