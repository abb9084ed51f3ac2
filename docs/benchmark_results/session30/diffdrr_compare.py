"""DiffDRR's wide X-rays of seed 0 (`benchmarks/independent_xrays.py`): the cases whose result moved between the
twenty-first session's rows (`independent_xrays/closed_readings/*_wide_s0`) and this session's (`diffdrr_wide_s0/*`).
Run from the repository root."""
import csv
BEFORE, AFTER = "docs/benchmark_results/independent_xrays/closed_readings", "docs/benchmark_results/session30/diffdrr_wide_s0"
for ct in ["chest", "pelvis", "sample", "tptbox"]:
    before = list(csv.DictReader(open(f"{BEFORE}/{ct}_wide_s0/results.csv")))
    after = list(csv.DictReader(open(f"{AFTER}/{ct}/results.csv")))
    for x, y in zip(before, after):
        a, b = float(x["mtre_mm"]), float(y["mtre_mm"])
        if abs(a - b) > 0.5 or x["likely_failed"] != y["likely_failed"]:
            print(f"{ct} {x['case']} {x['output']}: {a:.1f} -> {b:.1f} mm, flagged {x['likely_failed']} -> {y['likely_failed']}, "
                  f"confidence {x['confidence']} -> {y['confidence']}")
