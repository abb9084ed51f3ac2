"""The evidence table of docs/benchmarks.md (twenty-fifth session) from the results.csv files beside this script."""
import csv
import statistics as st
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[3] / "SOPIRegistration"))
from sopi.report import auroc  # noqa: E402

NAMES = {"sample_ct": "sample CT", "sub-ct_label-22_ct": "TPTBox crop", "ts_pelvis_ct": "pelvis (held out)", "popi_ct": "chest (held out)"}


def row(path: Path, label: str) -> str:
    rows = [r for r in csv.DictReader(open(path)) if r["method"] == "global+opt"]
    ok = [r["failed"] == "False" for r in rows]
    mtre = [float(r["mtre_mm"]) for r in rows]
    flagged = [r["likely_failed"] == "True" for r in rows]
    unflagged = sum((not o) and (not f) for o, f in zip(ok, flagged))
    area = auroc([float(r["confidence"]) for r in rows], ok) if 0 < sum(ok) < len(ok) else float("nan")
    return (f"| {label} | {sum(ok)} of {len(rows)} | {sum(m < 10 for m in mtre)} | {st.median(mtre):.2f} mm | "
            f"{unflagged} of {len(ok) - sum(ok)} | {area:.2f} | {st.median(float(r['time_s']) for r in rows):.1f} s |")


print("| CT, start | success (3 deg / 3 mm) | mTRE < 10 mm | median mTRE | failures not flagged | AUROC | median time |")
print("|---|---|---|---|---|---|---|")
for protocol in ("paper", "wide"):
    for folder, name in NAMES.items():
        print(row(HERE / f"{protocol}_s0" / folder / "results.csv", f"{name}, {protocol}"))
