"""One line per benchmark folder: successes (3 deg / 3 mm), mTRE < 10 mm, median mTRE, failures not flagged, successes
flagged, median benchmark time and DRRs, then every case's mTRE. python table.py FOLDER..."""
import csv
import statistics
import sys

for folder in sys.argv[1:]:
    rows = [r for r in csv.DictReader(open(f"{folder}/results.csv")) if r["method"] != "Initial"]
    mtre = [float(r["mtre_mm"]) for r in rows]
    successes = sum(r["failed"] == "False" for r in rows)
    unflagged = [round(float(r["mtre_mm"]), 1) for r in rows if r["failed"] == "True" and r["likely_failed"] == "False"]
    flagged_ok = sum(r["failed"] == "False" and r["likely_failed"] == "True" for r in rows)
    times = [float(r["time_s"]) for r in rows]
    renders = [int(r["renders"]) for r in rows]
    print(f"{folder}: success {successes}/{len(rows)}, < 10 mm {sum(x < 10 for x in mtre)}/{len(rows)}, median {statistics.median(mtre):.2f} mm, "
          f"failures not flagged {unflagged}, successes flagged {flagged_ok}, median time {statistics.median(times):.1f} s, "
          f"median DRRs {statistics.median(renders):.0f}")
    print("    " + " ".join(f"{x:.1f}" for x in mtre))
