"""Two `session28/time_wide.py` outputs of the same cases side by side: per CT the median / mean wall time, cases within
20 s, mTRE < 10 mm and < 3 mm, flagged, failures (>= 10 mm) unflagged; then the cases whose result moved.
Usage: compare_times.py BEFORE.jsonl AFTER.jsonl"""
import json, statistics as st, sys
def load(path):
    return {(r["ct"], r["case"]): r for r in map(json.loads, open(path))}
before, after = load(sys.argv[1]), load(sys.argv[2])
keys = [k for k in after if k in before]
def row(rows):
    walls = [r["wall_s"] for r in rows]
    return (f"median {st.median(walls):.1f} s, mean {st.mean(walls):.1f}, <= 20 s {sum(w <= 20 for w in walls)}, "
            f"< 10 mm {sum(r['mtre_mm'] < 10 for r in rows)}, < 3 mm {sum(r['mtre_mm'] < 3 for r in rows)}, "
            f"flagged {sum(r['likely_failed'] for r in rows)}, >= 10 mm unflagged {sum(r['mtre_mm'] >= 10 and not r['likely_failed'] for r in rows)}")
for ct in list(dict.fromkeys(k[0] for k in keys)) + ["all"]:
    mine = [k for k in keys if ct in ("all", k[0])]
    print(f"{ct} (n={len(mine)})\n  before: {row([before[k] for k in mine])}\n  after:  {row([after[k] for k in mine])}")
print("moved (mTRE before -> after, wall before -> after):")
for k in sorted(keys):
    b, a = before[k], after[k]
    if abs(b["mtre_mm"] - a["mtre_mm"]) > 0.05 or b["likely_failed"] != a["likely_failed"]:
        print(f"  {k[0]} {k[1]}: {b['mtre_mm']} -> {a['mtre_mm']} mm, flagged {b['likely_failed']} -> {a['likely_failed']}, "
              f"{b['wall_s']} -> {a['wall_s']} s")
