"""Compare two sopi benchmark folders (one sub-folder per CT): successes, medians, unflagged failures, changed cases."""
import csv, sys, statistics as st
from pathlib import Path
a, b = Path(sys.argv[1]), Path(sys.argv[2])
method = sys.argv[3] if len(sys.argv) > 3 else "global+opt"
def load(d):
    return {r["case"]: r for r in csv.DictReader(open(d / "results.csv")) if r["method"] == method}
tot = [0, 0, 0, 0]
for ct in sorted(p.name for p in a.iterdir() if (p / "results.csv").exists() and (b / p.name / "results.csv").exists()):
    A, B = load(a / ct), load(b / ct)
    cases = sorted(set(A) & set(B), key=int)
    sa = sum(A[c]["failed"] == "False" for c in cases); sb = sum(B[c]["failed"] == "False" for c in cases)
    ma = st.median(float(A[c]["mtre_mm"]) for c in cases); mb = st.median(float(B[c]["mtre_mm"]) for c in cases)
    ta = st.median(float(A[c]["time_s"]) for c in cases); tb = st.median(float(B[c]["time_s"]) for c in cases)
    ua = sum(A[c]["failed"] == "True" and A[c]["likely_failed"] == "False" for c in cases); ub = sum(B[c]["failed"] == "True" and B[c]["likely_failed"] == "False" for c in cases)
    print(f"{ct}: n={len(cases)} success {sa} -> {sb}, median mTRE {ma:.2f} -> {mb:.2f}, unflagged failures {ua} -> {ub}, median time {ta:.1f} -> {tb:.1f}")
    for c in cases:
        x, y = A[c], B[c]
        if x["failed"] != y["failed"] or abs(float(x["mtre_mm"]) - float(y["mtre_mm"])) > 0.5:
            print(f"   case {c}: {float(x['mtre_mm']):.2f} ({'F' if x['failed']=='True' else 'ok'}, tr {float(x['paper_translation_mm']):.2f}) -> {float(y['mtre_mm']):.2f} ({'F' if y['failed']=='True' else 'ok'}, tr {float(y['paper_translation_mm']):.2f})")
    tot[0] += sa; tot[1] += sb; tot[2] += len(cases)
print("all", tot[0], "->", tot[1], "of", tot[2])
