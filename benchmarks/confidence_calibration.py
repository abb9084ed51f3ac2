#!/usr/bin/env python3
"""Calibrate and check ``sopi.registration.confidence`` on ``sopi benchmark`` results.

Each ``--calibrate`` / ``--check`` argument is a benchmark output folder (its
``results.csv`` holds every case's cues: ``confidence_similarity_gc``,
``confidence_peak_drop``, ...). The logistic model over (similarity, peak drop) is fitted
on the calibration folders only (Newton's method, a small ridge); ``likely_failed`` is
confidence < 0.5. With ``--target-missed F`` its bias is then shifted so that at most that
share of the calibration failures stays unflagged. Both are reported on the check folders,
which were not used.
Success is the benchmark's: not ``failed`` (the paper's 3 deg / 3 mm); mTRE < 2 mm is
reported beside it.

Usage:
    .venv/bin/python benchmarks/confidence_calibration.py --calibrate DIR ... --check DIR ... [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "SOPIRegistration"))

from sopi.report import auroc  # noqa: E402

FEATURES = ("confidence_similarity_gc", "confidence_peak_drop")
SECTION = "## Confidence (issue 13 item 5)"


def read_cases(folders: list[Path]) -> list[dict]:
    """Every registered case (not the ``Initial`` rows) of the folders, tagged with its folder."""
    rows = []
    for folder in folders:
        with open(folder / "results.csv", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row["method"] != "Initial":
                    rows.append({**row, "folder": folder.name})
    return rows


def design(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """``(X with a bias column, success)``."""
    x = np.array([[1.0, *(float(row[name]) for name in FEATURES)] for row in rows])
    y = np.array([row["failed"] not in ("True", "true", "1") for row in rows], dtype=float)
    return x, y


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3, iterations: int = 100) -> np.ndarray:
    """Maximum-likelihood logistic weights (Newton's method, ridge on the non-bias weights)."""
    weights = np.zeros(x.shape[1])
    penalty = ridge * np.diag([0.0] + [1.0] * (x.shape[1] - 1))
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ weights, -60, 60)))
        gradient = x.T @ (p - y) + penalty @ weights
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-10:
            break
    return weights


def shift_for_missed(x: np.ndarray, y: np.ndarray, weights: np.ndarray, target_missed: float) -> np.ndarray:
    """Weights with the bias moved so that z >= 0 for at most ``target_missed`` of the failures: the
    boundary sits halfway between the highest failure that must be flagged and the next success above it."""
    z = x @ weights
    failures = np.sort(z[y == 0])[::-1]
    if len(failures) == 0:
        return weights
    allowed = int(np.floor(target_missed * len(failures)))  # failures that may stay above the boundary
    highest = failures[min(allowed, len(failures) - 1)]
    above = z[(y == 1) & (z > highest)]
    boundary = (highest + above.min()) / 2 if len(above) else highest + 1.0
    shifted = weights.copy()
    shifted[0] -= boundary
    return shifted


def evaluate(rows: list[dict], weights: np.ndarray) -> dict:
    """AUROC for success and for mTRE < 2 mm, failures not flagged, successes flagged."""
    x, y = design(rows)
    z = x @ weights
    success = y == 1
    flagged = z < 0
    mtre = np.array([float(row["mtre_mm"]) for row in rows])
    return {
        "cases": len(rows), "failed": int((~success).sum()),
        "auroc": auroc(z, success), "auroc_2mm": auroc(z, mtre < 2.0),
        "missed": float(np.mean(~flagged[~success])) if (~success).any() else float("nan"),
        "false_alarms": float(np.mean(flagged[success])) if success.any() else float("nan"),
        "auroc_similarity": auroc(x[:, 1], success),
    }  # fmt: skip


def table(groups: dict[str, list[dict]], weights: np.ndarray) -> list[str]:
    lines = [
        "| cases | n | failed | AUROC (success) | AUROC (mTRE < 2 mm) | AUROC of the similarity alone | failed, not flagged | successes flagged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in groups.items():
        if not rows:
            continue
        r = evaluate(rows, weights)
        lines.append(
            f"| {name} | {r['cases']} | {r['failed']} | {r['auroc']:.3f} | {r['auroc_2mm']:.3f} | {r['auroc_similarity']:.3f} | "
            f"{100 * r['missed']:.1f} % | {100 * r['false_alarms']:.1f} % |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibrate", type=Path, nargs="+", required=True)
    parser.add_argument("--check", type=Path, nargs="+", default=[])
    parser.add_argument("--target-missed", type=float, default=None, help="shift the bias to flag all but this share of failures")
    parser.add_argument("--out", type=Path, default=None, help="write/replace the section in this markdown file")
    args = parser.parse_args(argv)
    calibration, check = read_cases(args.calibrate), read_cases(args.check)
    x, y = design(calibration)
    fitted = fit_logistic(x, y)
    weights = fitted if args.target_missed is None else shift_for_missed(x, y, fitted, args.target_missed)
    coefficients = {"bias": round(float(weights[0]), 2), "similarity": round(float(weights[1]), 2), "drop": round(float(weights[2]), 2)}
    groups = {"calibration (all)": calibration, "check (all)": check}
    for folder in dict.fromkeys(row["folder"] for row in calibration + check):
        groups[f"`{folder}`"] = [row for row in calibration + check if row["folder"] == folder]
    lines = [SECTION, "", f"Fitted (maximum likelihood): {np.round(fitted, 2).tolist()}; used: `COEFFICIENTS = {coefficients}`.", ""]
    lines += table(groups, np.array(list(coefficients.values())))
    lines += ["", "Calibration folders: " + ", ".join(f"`{p.name}`" for p in args.calibrate) + "; check folders: "
              + ", ".join(f"`{p.name}`" for p in args.check) + ".", ""]
    print("\n".join(lines))
    if args.out:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from drr_speed_report import write_section

        write_section(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
