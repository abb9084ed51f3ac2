"""Benchmark report: a table shaped like the paper's Table 1, extended metrics, and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json
from .geometry import PARAM_NAMES

__all__ = ["auroc", "summarise", "table_markdown", "write_report"]


def auroc(scores: list[float] | np.ndarray, positive: list[bool] | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` (Mann-Whitney, ties count half);
    NaN when either class is empty."""
    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    hits, misses = scores[positive], scores[~positive]
    if len(hits) == 0 or len(misses) == 0:
        return float("nan")
    greater = (hits[:, None] > misses[None, :]).sum() + 0.5 * (hits[:, None] == misses[None, :]).sum()
    return float(greater / (len(hits) * len(misses)))


def _confidence_stats(chosen: list[dict]) -> dict[str, float]:
    """AUROC of the result's confidence for success (not ``failed``: the paper's 3 deg / 3 mm), the
    share of failed cases ``likely_failed`` missed and of successes it flagged (NaN when a class is empty)."""
    rated = [row for row in chosen if str(row.get("confidence", "")) not in ("", "nan")]
    if not rated:
        return {}
    confidence = np.array([float(row["confidence"]) for row in rated])
    success = np.array([not _true(row["failed"]) for row in rated])
    flagged = np.array([_true(row["likely_failed"]) for row in rated])
    return {
        "confidence_auroc": auroc(confidence, success),
        "failed_not_flagged": float(np.mean(~flagged[~success])) if (~success).any() else float("nan"),
        "success_flagged": float(np.mean(flagged[success])) if success.any() else float("nan"),
        "failed_cases": int((~success).sum()),
    }


def _true(value) -> bool:
    """A bool from a row read from memory or from ``results.csv``."""
    return value is True or str(value).lower() in ("true", "1")


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per method: mean, std, median and 95th percentile of each metric, failure and success rates."""
    summary: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        chosen = [row for row in rows if row["method"] == method]
        stats: dict[str, float] = {"cases": len(chosen)}
        for key in ("paper_rotation_deg", "paper_translation_mm", "rotation_deg", "translation_at_isocenter_mm", "mtre_mm", "projection_distance_mm", "time_s"):
            values = np.array([float(row[key]) for row in chosen])
            stats[f"{key}_mean"] = float(values.mean())
            stats[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            stats[f"{key}_median"] = float(np.median(values))
            stats[f"{key}_p95"] = float(np.percentile(values, 95))
        mtre = np.array([float(row["mtre_mm"]) for row in chosen])
        if all(f"est_{name}" in row and f"true_{name}" in row for row in chosen for name in PARAM_NAMES):
            for name in PARAM_NAMES:  # per axis: where the summed errors come from, and any systematic offset
                signed = np.array([float(row[f"est_{name}"]) - float(row[f"true_{name}"]) for row in chosen])
                stats[f"{name}_abs_error_mean"] = float(np.abs(signed).mean())
                stats[f"{name}_bias"] = float(signed.mean())
        stats["failure_rate"] = float(np.mean([bool(row["failed"]) for row in chosen]))
        stats["success_2mm"] = float(np.mean(mtre < 2.0))
        stats["success_10mm"] = float(np.mean(mtre < 10.0))
        stats.update(_confidence_stats(chosen))
        summary[method] = stats
    return summary


def table_markdown(summary: dict[str, dict[str, float]]) -> str:
    """The paper's Table 1 columns, then the extended metrics."""
    lines = [
        "| Method | Rotation (deg) | Translation (mm) | Failure rate (%) | Reg. time (s) |",
        "|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        time = "N/A" if method == "Initial" else f"{s['time_s_mean']:.2f}"
        lines.append(
            f"| {method} | {s['paper_rotation_deg_mean']:.2f} +- {s['paper_rotation_deg_std']:.2f} | "
            f"{s['paper_translation_mm_mean']:.2f} +- {s['paper_translation_mm_std']:.2f} | {100 * s['failure_rate']:.1f} | {time} |"
        )
    lines += [
        "",
        "| Method | mTRE median (mm) | mTRE p95 (mm) | mTRE < 2 mm (%) | mTRE < 10 mm (%) | geodesic rotation median (deg) | translation at isocentre median (mm) | projection distance median (mm) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        lines.append(
            f"| {method} | {s['mtre_mm_median']:.2f} | {s['mtre_mm_p95']:.2f} | {100 * s['success_2mm']:.1f} | {100 * s['success_10mm']:.1f} | "
            f"{s['rotation_deg_median']:.2f} | {s['translation_at_isocenter_mm_median']:.2f} | {s['projection_distance_mm_median']:.2f} |"
        )
    rated = [(method, s) for method, s in summary.items() if "confidence_auroc" in s]
    if rated:
        lines += [
            "",
            "Confidence (computed without the truth) against success (the paper's 3 deg / 3 mm):",
            "",
            "| Method | AUROC | failed cases | failed, not flagged (%) | successes flagged (%) |",
            "|---|---|---|---|---|",
        ]
        for method, s in rated:
            lines.append(
                f"| {method} | {s['confidence_auroc']:.3f} | {s['failed_cases']} | {100 * s['failed_not_flagged']:.1f} | "
                f"{100 * s['success_flagged']:.1f} |"
            )
    with_axes = [(method, s) for method, s in summary.items() if f"{PARAM_NAMES[0]}_bias" in s]
    if with_axes:
        lines += [
            "",
            "Per axis of theta: mean |error| (mean signed error, estimate minus truth); `tz_mm` is depth.",
            "",
            "| Method | " + " | ".join(PARAM_NAMES) + " |",
            "|---|" + "---|" * len(PARAM_NAMES),
        ]
        for method, s in with_axes:
            cells = " | ".join(f"{s[name + '_abs_error_mean']:.2f} ({s[name + '_bias']:+.2f})" for name in PARAM_NAMES)
            lines.append(f"| {method} | {cells} |")
    return "\n".join(lines) + "\n"


def write_report(rows: list[dict], out: Path, settings: dict) -> list[Path]:
    """Write ``report.md``, ``summary.json``, ``errors.png`` and ``capture_range.png``."""
    summary = summarise(rows)
    report = out / "report.md"
    text = (
        "# Registration benchmark\n\n"
        f"Protocol `{settings['protocol']}`, {settings['cases']} cases, seed {settings['seed']}, "
        f"{'realistic' if settings['realistic'] else 'clean'} simulated X-rays, {settings['view']} view, device {settings['device']}.\n"
        "Rotation and translation: the paper's sums of absolute per-axis errors of theta; failure: either at or above 3.\n\n"
        + table_markdown(summary)
        + "\n![error distributions](errors.png)\n\n![capture range](capture_range.png)\n"
    )
    with atomic_path(report) as temporary:
        Path(temporary).write_text(text, encoding="utf-8")
    summary_path = out / "summary.json"
    write_json(summary_path, {"settings": settings, "summary": summary})
    return [report, summary_path, *_plots(rows, out)]


def _plots(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(row["method"] for row in rows))
    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    for axis, key, label in zip(
        axes,
        ("paper_rotation_deg", "paper_translation_mm", "mtre_mm"),
        ("rotation error (deg, sum of axes)", "translation error (mm, sum of axes)", "mTRE (mm)"),
    ):
        data = [[max(float(row[key]), 1e-3) for row in rows if row["method"] == method] for method in methods]
        axis.boxplot(data, showfliers=True)
        axis.set_xticks(range(1, len(methods) + 1), methods, rotation=30, ha="right")
        axis.set_yscale("log")
        axis.set_ylabel(label)
        if key != "mtre_mm":
            axis.axhline(3.0, color="red", linewidth=0.8, linestyle="--")
    figure.tight_layout()
    errors = out / "errors.png"
    with atomic_path(errors) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)

    initial = {int(row["case"]): max(float(row["mtre_mm"]), 1e-3) for row in rows if row["method"] == "Initial"}
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    for method in methods:
        if method == "Initial":
            continue
        chosen = [row for row in rows if row["method"] == method]
        axis.scatter([initial[int(row["case"])] for row in chosen], [max(float(row["mtre_mm"]), 1e-3) for row in chosen], s=12, label=method)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("initial mTRE (mm)")
    axis.set_ylabel("final mTRE (mm)")
    axis.axhline(2.0, color="grey", linewidth=0.8, linestyle="--")
    axis.legend(fontsize=8)
    figure.tight_layout()
    capture = out / "capture_range.png"
    with atomic_path(capture) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
    return [errors, capture]
