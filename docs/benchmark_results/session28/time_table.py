"""Per-CT table of `time_wide.py`'s JSON lines: median / mean / slowest wall time, cases within 20 s, successes
(3 deg and 3 mm are not in the lines: mTRE only), mTRE < 10 mm, flagged, unflagged over 10 mm."""
import json, statistics as st, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for ct in dict.fromkeys(r["ct"] for r in rows):
    mine = [r for r in rows if r["ct"] == ct]
    walls = [r["wall_s"] for r in mine]
    under = sum(r["mtre_mm"] < 10 for r in mine)
    print(f"{ct}: n={len(mine)} median {st.median(walls):.1f} s, mean {st.mean(walls):.1f}, slowest {max(walls):.1f}, "
          f"<= 20 s {sum(w <= 20 for w in walls)}, mTRE < 10 mm {under}, < 3 mm {sum(r['mtre_mm'] < 3 for r in mine)}, "
          f"median mTRE {st.median(r['mtre_mm'] for r in mine):.2f}, flagged {sum(r['likely_failed'] for r in mine)}, "
          f"unflagged >= 10 mm {sum(r['mtre_mm'] >= 10 and not r['likely_failed'] for r in mine)}")
walls = [r["wall_s"] for r in rows]
print(f"all: n={len(rows)} median {st.median(walls):.1f} s, mTRE < 10 mm {sum(r['mtre_mm'] < 10 for r in rows)}")
