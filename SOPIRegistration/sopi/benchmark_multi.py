"""``sopi benchmark`` on several CTs: one benchmark per CT, then a report per CT and pooled.

Each CT gets its own folder (named after its file) holding the usual ``results.csv``,
``report.md`` and plots; the top folder's ``report.md`` and ``summary.json`` put the
per-CT tables and the pooled table side by side. A mask given as ``auto`` is segmented
(:func:`sopi.segment.segment_spine`) and written beside that CT's results, so the
benchmark uses exactly what the product would.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

from .atomic import atomic_path, write_json
from .errors import InputError

__all__ = ["AUTO_MASK", "ct_names", "run_benchmarks"]

#: The ``--mask`` value that asks for the automatic segmentation.
AUTO_MASK = "auto"


def ct_names(cts: Sequence[str | Path]) -> list[str]:
    """A distinct folder name per CT: its file name without ``.nii.gz``/``.nii``/``.mha``/``.nrrd``
    (a DICOM folder's own name), numbered where two CTs share one."""
    names: list[str] = []
    for path in cts:
        stem = re.sub(r"(\.nii\.gz|\.nii|\.mha|\.mhd|\.nrrd)$", "", Path(path).name, flags=re.IGNORECASE) or "ct"
        name, number = stem, 2
        while name in names:
            name, number = f"{stem}-{number}", number + 1
        names.append(name)
    return names


def run_benchmarks(cts: Sequence[str | Path], masks: Sequence[str | Path], out_dir: str | Path, **options) -> list[Path]:
    """Run :func:`sopi.benchmark.run_benchmark` on every CT (``options`` as there) and write the pooled report.

    ``masks`` pairs with ``cts`` in order; a mask equal to :data:`AUTO_MASK` is segmented.
    """
    from .benchmark import run_benchmark
    from .report import summarise, table_markdown

    if not cts:
        raise InputError("--ct: no CT given; expected one or more")
    if len(masks) != len(cts):
        raise InputError(f"{len(cts)} --ct but {len(masks)} --mask; expected one --mask (a file or 'auto') per --ct, in the same order")
    out = Path(out_dir)
    written: list[Path] = []
    pooled: list[dict] = []
    sections = []
    progress = options.pop("progress", None)
    for index, (ct, mask, name) in enumerate(zip(cts, masks, ct_names(cts))):
        folder = out / name
        if str(mask) == AUTO_MASK:
            mask = _segmented_mask(ct, folder)
        report = None if progress is None else (lambda done, total, message, name=name, index=index: progress(
            index * total + done, len(cts) * total, f"{name}: {message}"))
        written += run_benchmark(ct, mask, folder, progress=report, **options)
        rows = _read_rows(folder / "results.csv")
        sections.append(f"## {name}\n\nCT `{ct}`, mask `{mask}`.\n\n" + table_markdown(summarise(rows)))
        pooled += [dict(row, ct=name) for row in rows]
    summary = summarise(pooled)
    text = (
        f"# Registration benchmark on {len(cts)} CTs\n\n"
        f"Protocol `{options.get('protocol', 'paper')}`, {options.get('cases', 50)} cases per CT, seed {options.get('seed', 0)}, "
        f"{'realistic' if options.get('realistic') else 'clean'} X-rays. Every CT's own report is in its folder.\n\n"
        "## Pooled\n\n" + table_markdown(summary) + "\n" + "\n".join(sections)
    )
    report_path = out / "report.md"
    with atomic_path(report_path) as temporary:
        Path(temporary).write_text(text, encoding="utf-8")
    summary_path = out / "summary.json"
    per_ct = {name: summarise([row for row in pooled if row["ct"] == name]) for name in dict.fromkeys(row["ct"] for row in pooled)}
    write_json(summary_path, {"cts": [str(ct) for ct in cts], "pooled": summary, "per_ct": per_ct})
    return [*written, report_path, summary_path]


def _segmented_mask(ct: str | Path, folder: Path) -> Path:
    from .io import read_ct, write_volume
    from .segment import segment_spine

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spine_auto.nii.gz"
    write_volume(path, segment_spine(read_ct(ct)))
    return path


def _read_rows(path: Path) -> list[dict]:
    """``results.csv`` rows with numbers and booleans restored."""
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows.append({key: _value(value) for key, value in row.items()})
    return rows


def _value(text: str):
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return text
