"""The confidence's logistic model refitted leave-one-CT-out on stored benchmark results.

For each of the five CTs, the model on (gradient correlation, peak drop) is fitted by maximum likelihood on the
other four CTs' results and compared, on the held-out CT, with the shipped coefficients: failures (3 deg / 3 mm)
not flagged and successes flagged (confidence below 0.5), and the AUROC of confidence for success.
Reads ``docs/benchmark_results`` (sixth and seventh sessions' folders); docs/benchmarks.md, "Rays that miss the CT
left out of the renderer", reports the output.

    python benchmarks/confidence_leave_one_ct_out.py
"""

from __future__ import annotations

import csv
import glob
import math
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmark_results"
#: folder pattern -> CT name; None: the CT is named by the results' own folder
FOLDERS = {
    "held_out_thorax/rejudge/paper_s*/*/results.csv": None,
    "held_out_thorax/rejudge/wide_s0/*/results.csv": None,
    "spine_in_view/wide_s1/*/results.csv": None,
    "held_out_thorax/rejudge/popi_paper_s*/results.csv": "chest",
    "held_out_thorax/wide_s*/results.csv": "chest",
    "held_out_thorax/clean_*/results.csv": "chest",
    "spine_in_view/in_plane_wider/pelvis_*/results.csv": "pelvis",
    "spine_in_view/pelvis_paper_s*/results.csv": "pelvis",
}
NAMES = {"sample_ct": "sample", "sub-ct_label-22_ct": "tptbox", "lidc_hu": "lidc"}
FLAGGED_BELOW = 0.5


def read_rows() -> list[tuple[str, float, float, float, bool]]:
    """``(ct, gradient correlation, peak drop, shipped confidence, success)`` of every registered case."""
    rows = []
    for pattern, ct in FOLDERS.items():
        for path in sorted(glob.glob(str(RESULTS / pattern))):
            name = ct or NAMES[Path(path).parent.name]
            with open(path, newline="") as handle:
                for row in csv.DictReader(handle):
                    if row["method"] == "Initial":
                        continue
                    rows.append((name, float(row["confidence_similarity_gc"]), float(row["confidence_peak_drop"]),
                                 float(row["confidence"]), row["failed"] == "False"))
    return rows


def fit_logistic(features: np.ndarray, labels: np.ndarray, ridge: float = 1e-3, steps: int = 100) -> np.ndarray:
    """Maximum-likelihood weights (Newton's method, a small ridge for stability); ``features`` starts with ones."""
    weights = np.zeros(features.shape[1])
    for _ in range(steps):
        probability = 1.0 / (1.0 + np.exp(-features @ weights))
        gradient = features.T @ (probability - labels) + ridge * weights
        hessian = features.T @ (features * (probability * (1 - probability))[:, None]) + ridge * np.eye(len(weights))
        weights -= np.linalg.solve(hessian, gradient)
    return weights


def auroc(scores: list[float], success: list[bool]) -> float:
    """Probability that a success scores above a failure (ties count half); NaN without both."""
    good = [score for score, ok in zip(scores, success) if ok]
    bad = [score for score, ok in zip(scores, success) if not ok]
    if not good or not bad:
        return float("nan")
    return sum((g > b) + 0.5 * (g == b) for g in good for b in bad) / (len(good) * len(bad))


def summary(confidence: list[float], success: list[bool]) -> str:
    failures = [value for value, ok in zip(confidence, success) if not ok]
    successes = [value for value, ok in zip(confidence, success) if ok]
    return (f"AUROC {auroc(confidence, success):.3f}, failures not flagged {sum(v >= FLAGGED_BELOW for v in failures)} of "
            f"{len(failures)}, successes flagged {sum(v < FLAGGED_BELOW for v in successes)} of {len(successes)}")


def main() -> None:
    rows = read_rows()
    cts = sorted({row[0] for row in rows})
    print(f"{len(rows)} results: " + ", ".join(f"{ct} {sum(row[0] == ct for row in rows)}" for ct in cts))
    for held_out in cts:
        train = [row for row in rows if row[0] != held_out]
        test = [row for row in rows if row[0] == held_out]
        weights = fit_logistic(np.array([[1.0, row[1], row[2]] for row in train]), np.array([row[4] for row in train], dtype=float))
        refit = [1.0 / (1.0 + math.exp(-(weights[0] + weights[1] * row[1] + weights[2] * row[2]))) for row in test]
        success = [row[4] for row in test]
        print(f"{held_out}: shipped: {summary([row[3] for row in test], success)}")
        print(f"{' ' * len(held_out)}  refit {np.round(weights, 2).tolist()}: {summary(refit, success)}")


if __name__ == "__main__":
    main()
