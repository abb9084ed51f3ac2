"""Two sopi benchmark folders: per CT success, <10 mm, median mTRE, unflagged failures, median time and renders; changed cases."""
import csv, sys, statistics as st
from pathlib import Path
a, b = Path(sys.argv[1]), Path(sys.argv[2])
def load(d):
    return {r["case"]: r for r in csv.DictReader(open(d / "results.csv")) if r["method"] == "global+opt"}
T = dict(s=[0, 0], u=[0, 0], n=0)
for ct in sorted(p.name for p in a.iterdir() if (p / "results.csv").exists() and (b / p.name / "results.csv").exists()):
    A, B = load(a / ct), load(b / ct)
    cases = sorted(set(A) & set(B), key=int)
    f = lambda R, k: [float(R[c][k]) for c in cases]
    s = [sum(R[c]["failed"] == "False" for c in cases) for R in (A, B)]
    u = [sum(float(R[c]["mtre_mm"]) < 10 for c in cases) for R in (A, B)]
    unfl = [sum(R[c]["failed"] == "True" and R[c]["likely_failed"] == "False" for c in cases) for R in (A, B)]
    print(f"{ct}: n={len(cases)} success {s[0]} -> {s[1]}, <10mm {u[0]} -> {u[1]}, median mTRE {st.median(f(A,'mtre_mm')):.2f} -> {st.median(f(B,'mtre_mm')):.2f}, "
          f"unflagged failures {unfl[0]} -> {unfl[1]}, median time {st.median(f(A,'time_s')):.1f} -> {st.median(f(B,'time_s')):.1f} s, "
          f"median renders {st.median(f(A,'renders')):.0f} -> {st.median(f(B,'renders')):.0f}, total time {sum(f(A,'time_s')):.0f} -> {sum(f(B,'time_s')):.0f}")
    for c in cases:
        x, y = A[c], B[c]
        if x["failed"] != y["failed"] or abs(float(x["mtre_mm"]) - float(y["mtre_mm"])) > 0.5:
            print(f"   case {c}: {float(x['mtre_mm']):.2f} ({'F' if x['failed']=='True' else 'ok'}{'/flag' if x['likely_failed']=='True' else ''}) -> "
                  f"{float(y['mtre_mm']):.2f} ({'F' if y['failed']=='True' else 'ok'}{'/flag' if y['likely_failed']=='True' else ''}), time {float(x['time_s']):.0f} -> {float(y['time_s']):.0f}")
    T["s"][0] += s[0]; T["s"][1] += s[1]; T["u"][0] += u[0]; T["u"][1] += u[1]; T["n"] += len(cases)
print(f"all: success {T['s'][0]} -> {T['s'][1]}, <10 mm {T['u'][0]} -> {T['u'][1]} of {T['n']}")
