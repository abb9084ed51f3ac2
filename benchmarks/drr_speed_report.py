"""The report of ``benchmarks/drr_speed.py``: its markdown section, table formatting, machine and revision
lines, and :func:`write_section` (also used by other benchmarks to replace a section of docs/benchmarks.md)."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PRESET = "perlove-plx118f"
SECTION = "## DRR projector"
#: How the benchmark venv was made (offline local index): the modules that
#: ``from diffdrr.drr import DRR`` and ``from diffdrr.data import read`` import, no more.
BENCH_VENV_RECIPE = [
    "python3 -m venv .bench-venv",
    '.bench-venv/bin/pip install torch==2.13.0 "numpy<2.4"',
    ".bench-venv/bin/pip install --no-deps diffdrr==0.6.1 torchio==1.2.1 tqdm jaxtyping humanize deprecated wrapt",
    ".bench-venv/bin/pip install fastcore einops nibabel pandas SimpleITK scipy",
    ".bench-venv/bin/pip install --no-deps nanodrr==0.1.7 roma platformdirs",
    ".bench-venv/bin/pip install --no-deps -e .",
]


LABELS = {
    "ours": "ours n={n}",
    "ours_step": "ours step 1 mm",
    "dd_trilinear": "DiffDRR trilinear n={n}",
    "dd_siddon": "DiffDRR Siddon",
    "nano": "nanodrr n={n}",
}
SHORT = {"ours": "ours", "ours_step": "ours 1 mm", "dd_trilinear": "DiffDRR tri", "dd_siddon": "DiffDRR Siddon", "nano": "nanodrr"}


def machine_description(device: torch.device, peers: dict) -> str:
    """One line: CPU, cores, torch and its threads, GPU, the peers' versions (``peers``: name -> (module or None, import error))."""
    cpu = platform.processor() or "?"
    try:
        info = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
        cpu = info.get("model name", cpu)
        if "cpu family" in info:
            cpu += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    except OSError:
        pass
    text = f"CPU {cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    diffdrr, nanodrr = peers["diffdrr"][0], peers["nanodrr"][0]
    if diffdrr is not None:
        text += f", diffdrr {diffdrr.__version__}"
    if nanodrr is not None:
        text += f", nanodrr {getattr(nanodrr, '__version__', '0.1.7')}"
    return text + f", Python {platform.python_version()}, numpy {np.__version__}"


def sopi_revision() -> str:
    """``commit <hash>`` of the checkout and whether ``drr.py`` differs from it (read-only git queries)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "SOPIRegistration/sopi/drr.py"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "revision unknown"
    return f"commit {commit}, drr.py " + ("modified" if dirty else "as committed")


def ms(entry: dict | None) -> str:
    if entry is None:
        return "n/a"
    if "error" in entry:
        return "failed"
    return f"{1000 * entry['median_s']:.0f}" if entry["median_s"] >= 0.1 else f"{1000 * entry['median_s']:.1f}"


def ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or "error" in a or "error" in b:
        return "n/a"
    return f"{a['median_s'] / b['median_s']:.2f}"


def mem(entry: dict | None) -> str:
    if entry is None:
        return "n/a"
    if "error" in entry:
        return "failed"
    if "cuda_peak_mb" in entry:
        return f"{entry['cuda_peak_mb']:.0f}"
    return f"{entry['peak_rss_mb']:.0f} (+{entry['peak_rss_mb'] - entry['baseline_rss_mb']:.0f})"


def timing_table(results: dict, n: int) -> list[str]:
    """Median ms per renderer and case (``results[(label, mode)]``), with ratios of ours to the others."""
    present = [k for k in LABELS if any(k in case for case in results.values())]
    ratios = [(k, "dd_trilinear") for k in ("ours", "ours_step") if k in present and "dd_trilinear" in present]
    ratios += [("ours", other) for other in ("dd_siddon", "nano") if "ours" in present and other in present]
    header = "| case [repeats] | " + " | ".join(LABELS[k].format(n=n) + " (ms)" for k in present)
    header += "".join(f" | {SHORT[a]} / {SHORT[b]}" for a, b in ratios) + " |"
    lines = [header, "|" + "---|" * (1 + len(present) + len(ratios))]
    for (label, mode), case in results.items():
        counts = "/".join(str(case.get(k, {}).get("n", "-")) for k in present)
        row = f"| {label} {mode} [{counts}] | " + " | ".join(ms(case.get(k)) for k in present)
        row += "".join(f" | {ratio(case.get(a), case.get(b))}" for a, b in ratios) + " |"
        lines.append(row)
    return lines


def report(args, scene, results: dict, memory: dict, agree: list[dict], samples_step: dict, load: tuple,
           low: dict | None = None, peers: dict | None = None) -> str:
    """The markdown section of a run (``scene``: drr_speed's Scene; ``peers``: name -> (module or None, import error))."""
    peers = peers or {"diffdrr": (None, "not given"), "nanodrr": (None, "not given")}
    (diffdrr, DIFFDRR_ERROR), (nanodrr, NANODRR_ERROR) = peers["diffdrr"], peers["nanodrr"]
    n = args.n_samples
    lines = [section_heading(scene.device), ""]
    lines.append(f"Date: {datetime.date.today().isoformat()}. Machine: {machine_description(scene.device, peers)}.")
    lines.append(
        f"Device: `{scene.device}`. sopi: {args.revision} (when the run started). Load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f}."
    )
    lines.append("")
    lines.append(
        f"Scene: `{args.ct.name}` (128^3 voxels of 2.8 mm), attenuation from {scene.mu_note}; preset "
        f"`{PRESET}` (sdd {scene.geometry.sdd_mm} mm, {scene.geometry.rows}x{scene.geometry.cols} pixels of "
        f"{scene.geometry.pixel_spacing_mm[0]} mm); AP nominal view about the volume centre; batch entries are "
        "theta = 0 and seeded perturbations (up to 3 deg, 5/5/10 mm). `fwd`: render under `torch.no_grad()`; "
        "`fwd+bwd`: render + NCC loss against a fixed image + backward to the 6 pose parameters (through the 4x4 pose)."
    )
    lines.append("")
    lines.append(
        f"Samples per ray: ours n={n} and DiffDRR trilinear n_points={n} (equal); ours `step_mm=1.0` (default) uses "
        + ", ".join(f"{v} (B={b})" for b, v in samples_step.items())
        + " samples (sample planes across the support box such that every ray's step is <= 1 mm)"
        + (
            "; DiffDRR Siddon takes one nearest-neighbour sample between consecutive voxel-plane crossings = "
            f"{sum(scene.volume.grid_shape) + 2} per ray (all 3 x 129 planes; its default does not drop crossings "
            "outside the volume)"
            if diffdrr is not None
            else ""
        )
        + ". Median wall time over the repeats (count in brackets) after one warm-up; "
        "repeats interleaved between renderers. Ratios < 1: ours faster."
    )
    lines.append("")
    present = [k for k in LABELS if any(k in case for case in results.values())]
    lines += timing_table({(f"B={batch}", mode): case for (batch, mode), case in results.items()}, n)
    if low:
        lines += [
            "",
            f"Low resolution, as a global search renders (forward only; the CT average-pooled 2x2x2 to "
            f"{args.low_scene_label}; ours n and nanodrr n = {args.low_n_samples}, DiffDRR trilinear n_points = "
            f"{args.low_n_samples}; `ours 1 mm` keeps its 1 mm step):",
            "",
        ]
        lines += timing_table(low, args.low_n_samples)
    if memory:
        lines.append("")
        unit = "peak CUDA memory allocated by the call (MiB)" if scene.device.type == "cuda" else (
            "peak RSS (VmHWM, reset after set-up) of a fresh process running the case once, MiB "
            "(in brackets: increase over its RSS before the call)"
        )
        lines.append(f"Memory: {unit}.")
        lines.append("")
        lines += ["| case | " + " | ".join(LABELS[k].format(n=n) for k in present) + " |", "|" + "---|" * (1 + len(present))]
        for (batch, mode), case in memory.items():
            lines.append(f"| B={batch} {mode} | " + " | ".join(mem(case.get(k)) for k in present) + " |")
    if diffdrr is None:
        lines += ["", f"DiffDRR not importable ({DIFFDRR_ERROR}): only our projector was timed."]
    if nanodrr is None:
        lines += ["", f"nanodrr not importable ({NANODRR_ERROR}): not timed."]
    lines += ["", "Agreement (same CT, detector and pose; B=1; each renderer against ours n={}):".format(n), ""]
    lines += ["| pose | renderer | Pearson r | relative L2 diff | max abs diff / max | mean ratio |", "|---|---|---|---|---|---|"]
    for row in agree:
        if "corr" in row:
            lines.append(
                f"| {row['pose']} | {LABELS[row['renderer']].format(n=n)} | {row['corr']:.7f} | {row['rel_l2']:.2e} "
                f"| {row['max_abs_rel']:.2e} | {row['mean_ratio']:.5f} |"
            )
    grads = [row for row in agree if "cosine" in row]
    if grads:
        lines += ["", "Pose gradients (NCC loss, B=1):", ""]
        lines += ["| renderer | cosine to ours | relative L2 diff | gradient (rx, ry, rz deg; tx, ty, tz mm) |", "|---|---|---|---|"]
        lines.append(f"| ours n={n} | 1 | 0 | {grads[0]['ours']} |")
        for row in grads:
            lines.append(
                f"| {LABELS[row['renderer']].format(n=n)} | {row['cosine']:.5f} | {row['rel_l2']:.2e} | {row['other']} |"
            )
    lines += ["", "Reproduce (DiffDRR goes in a separate, git-ignored venv; it is not a dependency of sopi):", "", "```"]
    lines += BENCH_VENV_RECIPE
    lines.append(" ".join([".bench-venv/bin/python", "benchmarks/drr_speed.py"] + args.argv_for_report))
    lines += ["```", ""]
    return "\n".join(lines)


def section_heading(device: torch.device) -> str:
    """``## DRR projector`` for CPU runs, ``## DRR projector (cuda)`` for GPU runs (kept side by side)."""
    return SECTION if device.type == "cpu" else f"{SECTION} ({device.type})"


def write_section(path: Path, section: str) -> None:
    """Replace the section that starts with ``section``'s heading line, or append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    heading = section.splitlines()[0]
    pattern = re.compile("^" + re.escape(heading) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
