"""Every stored benchmark result that records the spine in view (docs/benchmark_results/**/results.csv, one row per
distinct case and estimate): how many successes and unflagged failures over 10 mm lie under each threshold."""
import csv, glob
seen, successes, failures = set(), [], []
for path in glob.glob("docs/benchmark_results/**/results.csv", recursive=True):
    for row in csv.DictReader(open(path)):
        ratio = row.get("confidence_spine_in_view") or ""
        if row.get("method") == "Initial" or not ratio:
            continue
        key = (row["true_rx_deg"], row["est_rx_deg"], row["est_tz_mm"])
        if key in seen:
            continue
        seen.add(key)
        item = (float(ratio), float(row["mtre_mm"]), row["likely_failed"] == "True", path, row["case"])
        (successes if row["failed"] == "False" else failures).append(item)
print(f"distinct results: {len(successes)} successes, {len(failures)} failures")
for level in (0.5, 0.55, 0.6, 0.65, 0.7):
    print(f"under {level}: successes {sum(r < level for r, *_ in successes)} (unflagged {sum(r < level and not f for r, _, f, *_ in successes)}), "
          f"unflagged failures over 10 mm {sum(r < level and m > 10 and not f for r, m, f, *_ in failures)} "
          f"of {sum(m > 10 and not f for _, m, f, *_ in failures)}")
for ratio, mtre, flagged, path, case in sorted(successes)[:5] + sorted(f for f in failures if f[1] > 10 and not f[2])[:6]:
    print(f"  {ratio:.3f} mTRE {mtre:.1f} mm flagged {flagged} {path} case {case}")
