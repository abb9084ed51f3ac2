"""Training logs: a CSV of losses and errors per logged step, and a loss-curve PNG."""

from __future__ import annotations

import csv
from pathlib import Path

from ..atomic import atomic_path

__all__ = ["read_log", "write_log", "write_loss_plot"]


def read_log(path: Path, up_to_step: int) -> list[dict]:
    """Rows of an existing log with ``step <= up_to_step`` (the checkpoint a resumed run continues from)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if int(row["step"]) <= up_to_step]


def write_log(path: Path, rows: list[dict]) -> None:
    """Rewrite the whole CSV atomically (it stays small: one row per logged step)."""
    if not rows:
        return
    fields = list(rows[0])
    for row in rows:
        fields += [key for key in row if key not in fields]
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_loss_plot(path: Path, rows: list[dict], title: str) -> None:
    """Loss terms (log scale), and pose errors or gradient agreement, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    steps = [int(row["step"]) for row in rows]
    figure, (losses, errors) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in [k for k in rows[0] if k.startswith("loss")]:
        _curve(losses, steps, [float(row[key]) for row in rows], key)
    losses.set_yscale("log")
    losses.set_xlabel("step")
    losses.legend(fontsize=8)
    losses.set_title(title)
    for key, label in (("rotation_error_deg", "rotation |error| (deg)"), ("translation_error_mm", "translation |error| (mm)")):
        if key in rows[0]:
            _curve(errors, steps, [float(row[key]) for row in rows], label)
    for key, label in (("cosine_rotation", "cosine(learned, geodesic), rotation"), ("cosine_translation", "cosine(learned, geodesic), translation")):
        if key in rows[0]:
            _curve(errors, steps, [float(row[key]) for row in rows], label)
    errors.set_xlabel("step")
    if errors.lines:
        errors.legend(fontsize=8)
    errors.set_title("pose errors" if "rotation_error_deg" in rows[0] else "gradient agreement")
    if "rotation_error_deg" in rows[0]:
        errors.set_ylim(bottom=0)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110)
    plt.close(figure)


def _curve(axes, steps: list[int], values: list[float], label: str, window: int = 20) -> None:
    """The logged values, faint, and their running mean over ``window`` rows."""
    line = axes.plot(steps, values, linewidth=0.6, alpha=0.3)[0]
    smoothed = [sum(values[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]
    axes.plot(steps, smoothed, color=line.get_color(), linewidth=1.5, label=label)
