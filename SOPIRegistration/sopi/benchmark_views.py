"""``sopi benchmark --views ap,lateral``: single view and joint views on the same simulated cases.

Each case is one pose of the patient drawn from a protocol about view 0's nominal view
(spine centroid as isocentre); every view is a DRR of it through its nominal
``view_from_reference``. Each method runs twice per case: on view 0 alone
(:func:`sopi.registration.register`) and on all views at once
(:func:`sopi.registration.register_views`), from the same start (view 0's nominal
view). Errors are measured against the truth afterwards: mTRE over spine voxels, the
depth error (along view 0's principal ray, at the isocentre) and the paper's sums. Each row
keeps the result's ``confidence`` and ``likely_failed`` (for the joint runs the lowest view's,
:func:`sopi.registration.confidence.assess_views`); the summary rates them against success
(mTRE below :data:`SUCCESS_MTRE_MM`): AUROC, failures not flagged, successes flagged.
"""

from __future__ import annotations

import csv
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .atomic import atomic_path, write_json
from .errors import InputError
from .geometry import CArmGeometry, invert_rigid, nominal_view, transform_points

__all__ = ["confidence_stats", "depth_error_mm", "run_views_benchmark"]

#: A case succeeds when its mTRE is below this (mm): the issue's target.
SUCCESS_MTRE_MM = 1.0


def depth_error_mm(estimate: torch.Tensor, truth: torch.Tensor, point_world: torch.Tensor) -> float:
    """Signed error (mm) along the camera's principal ray where the two ``camera_from_world`` put ``point_world``."""
    point = point_world.to(torch.float64).reshape(1, 3)
    return float((transform_points(estimate, point) - transform_points(truth, point))[0, 2])


def run_views_benchmark(
    ct_path: str | Path,
    mask_path: str | Path,
    out_dir: str | Path,
    *,
    views: Sequence[str],
    methods: Sequence[str] = ("opt",),
    protocol: str = "wide",
    cases: int = 10,
    seed: int = 0,
    geometry: CArmGeometry | None = None,
    device: torch.device | str = "cpu",
    prepare: bool = True,
    realistic: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Path]:
    """Run every method single-view and joint on every case; write ``results.csv``, ``summary.json`` and ``report.md``.

    ``realistic``: every view an intra-operative X-ray with its own draws (:func:`sopi.simulate.other_view_images`;
    view 0's are those of ``sopi benchmark --realistic``)."""
    from .benchmark import case_metrics, simulate_cases, target_points
    from .io import read_ct, read_mask
    from .io_xray import XRay
    from .registration import get_method, register, register_views
    from .registration.multiview import multiview_methods
    from .segment import mask_centroid_world
    from .simulate import other_view_images
    from .validate import check_outputs, check_seed

    views = list(views)
    if len(views) < 2:
        raise InputError(f"views: expected two or more, such as ap,lateral; got {views}")
    for method in methods:
        get_method(method)
        if method not in multiview_methods():
            raise InputError(f"method {method!r} registers one view; with several views use one of {multiview_methods()}")
    if not (isinstance(cases, int) and cases >= 1):
        raise InputError(f"cases: expected a positive integer, got {cases!r}")
    check_seed(seed)
    check_outputs({"out": out_dir}, {"ct": ct_path, "mask": mask_path}, folders=("out",))
    geometry = geometry or CArmGeometry.preset("perlove-plx118f")
    ct = read_ct(ct_path)
    spine = read_mask(mask_path, ct)
    isocenter = mask_centroid_world(spine)
    nominals = [nominal_view(view, isocenter, geometry.source_to_isocenter_mm) for view in views]
    reference = invert_rigid(nominals[0].camera_from_world)
    geometries = [geometry] + [geometry.with_view_from_reference(nominal.camera_from_world @ reference) for nominal in nominals[1:]]
    points = target_points(spine)
    thetas, first_images, _ = simulate_cases(ct, nominals[0], geometry, protocol, cases, seed, realistic, device=device, spine=spine)
    truths = torch.stack([nominals[0].pose(theta) for theta in thetas])
    others, _ = other_view_images(ct, geometries[1:], truths, seed, realistic, device)
    rows: list[dict] = []
    total, done = cases * len(methods) * 2, 0
    start = nominals[0].camera_from_world
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, summary_path, report_path = out / "results.csv", out / "summary.json", out / "report.md"
    for index, truth in enumerate(truths):
        images = [first_images[index], *others[index]]
        xrays = [XRay(image, g) for image, g in zip(images, geometries)]
        rows.append(_row("Initial", "-", index, start, truth, nominals[0], geometry, points, 0.0, case_metrics))
        for method in methods:
            for label in (views[0], "+".join(views)):
                cpu_started = time.process_time()
                if label == views[0]:
                    result = register(ct, xrays[0], initial_pose=start, mask=spine, method=method, device=device, seed=seed + index, prepare=prepare)
                else:
                    result = register_views(ct, xrays, initial_pose=start, mask=spine, method=method, device=device, seed=seed + index, prepare=prepare)
                rows.append(_row(method, label, index, result.camera_from_world, truth, nominals[0], geometry, points, result.time_s, case_metrics))
                rows[-1].update(confidence=round(result.confidence, 4), likely_failed=result.likely_failed)
                rows[-1]["cpu_s"] = round(time.process_time() - cpu_started, 2)  # this process's CPU time: steadier than wall time on a shared CPU
                done += 1
                if progress is not None:
                    progress(done, total, f"{method} {label} case {index + 1}/{cases}: mTRE {rows[-1]['mtre_mm']:.2f} mm")
        _write_rows(csv_path, rows)  # after every case: a long run stopped early keeps what it measured
    summary = _summary(rows)
    settings = {"ct": str(ct_path), "mask": str(mask_path), "views": views, "methods": list(methods), "protocol": protocol,
                "cases": cases, "seed": seed, "geometry": geometry.to_dict(), "prepare": prepare, "realistic": realistic}
    write_json(summary_path, {"settings": settings, "summary": summary})
    with atomic_path(report_path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        handle.write(_report(summary, settings))
    return [csv_path, summary_path, report_path]


def _write_rows(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _row(method, views, index, estimate, truth, nominal, geometry, points, time_s, case_metrics) -> dict:
    metrics = case_metrics(estimate, truth, nominal, geometry, points)
    return {
        "method": method, "views": views, "case": index, "mtre_mm": metrics.mtre_mm,
        "depth_error_mm": depth_error_mm(estimate, truth, nominal.isocenter_world),
        "translation_at_isocenter_mm": metrics.translation_at_isocenter_mm, "rotation_deg": metrics.rotation_deg,
        "paper_rotation_deg": metrics.paper_rotation_deg, "paper_translation_mm": metrics.paper_translation_mm,
        "time_s": time_s, "cpu_s": 0.0, "confidence": float("nan"), "likely_failed": "",
    }


def confidence_stats(group: list[dict]) -> dict:
    """How well ``confidence`` and ``likely_failed`` tell success (mTRE < :data:`SUCCESS_MTRE_MM`) in
    ``group``: AUROC, the share of failures not flagged and of successes flagged (NaN for an empty class)."""
    from .report import auroc

    rated = [row for row in group if row["confidence"] == row["confidence"]]  # the Initial rows have none
    if not rated:
        return {}
    success = [row["mtre_mm"] < SUCCESS_MTRE_MM for row in rated]
    flagged = [row["likely_failed"] is True for row in rated]
    failures = [hit for hit, ok in zip(flagged, success) if not ok]
    successes = [hit for hit, ok in zip(flagged, success) if ok]
    return {
        "confidence_auroc": auroc([row["confidence"] for row in rated], success),
        "confidence_median": statistics.median(row["confidence"] for row in rated),
        "failed_cases": len(failures),
        "failed_not_flagged": sum(not hit for hit in failures) / len(failures) if failures else float("nan"),
        "success_flagged": sum(successes) / len(successes) if successes else float("nan"),
    }


def _summary(rows: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["views"]), []).append(row)
    summary = []
    for (method, views), group in groups.items():
        mtre = [row["mtre_mm"] for row in group]
        summary.append({
            "method": method, "views": views, "cases": len(group),
            "success_percent": 100.0 * sum(value < SUCCESS_MTRE_MM for value in mtre) / len(group),
            "mtre_median_mm": statistics.median(mtre),
            "depth_error_median_mm": statistics.median(abs(row["depth_error_mm"]) for row in group),
            "rotation_median_deg": statistics.median(row["rotation_deg"] for row in group),
            "time_median_s": statistics.median(row["time_s"] for row in group),
            "cpu_median_s": statistics.median(row["cpu_s"] for row in group),
            **confidence_stats(group),
        })
    return summary


def _report(summary: list[dict], settings: dict) -> str:
    lines = [
        f"# Single view against {' + '.join(settings['views'])}", "",
        f"CT `{settings['ct']}`, mask `{settings['mask']}`, protocol `{settings['protocol']}`, {settings['cases']} cases, "
        f"seed {settings['seed']}, {'realistic X-rays' if settings.get('realistic') else 'DRRs'}, "
        f"preparation {'on' if settings['prepare'] else 'off'}.", "",
        f"| Method | Views | Cases | mTRE < {SUCCESS_MTRE_MM:g} mm (%) | mTRE median (mm) | depth error median (mm) | rotation median (deg) | time median (s) | CPU median (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in summary:
        lines.append(
            f"| {entry['method']} | {entry['views']} | {entry['cases']} | {entry['success_percent']:.0f} | {entry['mtre_median_mm']:.2f} | "
            f"{entry['depth_error_median_mm']:.2f} | {entry['rotation_median_deg']:.2f} | {entry['time_median_s']:.1f} | {entry['cpu_median_s']:.1f} |"
        )
    rated = [entry for entry in summary if "confidence_auroc" in entry]
    if rated:
        lines += [
            "", f"Confidence against success (mTRE < {SUCCESS_MTRE_MM:g} mm); joint runs: the lowest view's confidence.", "",
            "| Method | Views | AUROC | median confidence | failed cases | failed not flagged (%) | successes flagged (%) |",
            "|---|---|---|---|---|---|---|",
        ]
        for entry in rated:
            lines.append(
                f"| {entry['method']} | {entry['views']} | {entry['confidence_auroc']:.2f} | {entry['confidence_median']:.2f} | "
                f"{entry['failed_cases']} | {100 * entry['failed_not_flagged']:.0f} | {100 * entry['success_flagged']:.0f} |"
            )
    return "\n".join(lines) + "\n"
