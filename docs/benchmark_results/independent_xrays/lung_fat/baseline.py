"""The s19 state of a DiffDRR paper row: edges/ results, with the cases other_reading/ registered again."""
import csv, sys, json
base = "/work/main/docs/benchmark_results/independent_xrays"
def rows(name):
    out = {r["case"]: r for r in csv.DictReader(open(f"{base}/edges/{name}/results.csv"))}
    try:
        out.update({r["case"]: r for r in csv.DictReader(open(f"{base}/other_reading/{name}/results.csv"))})
    except FileNotFoundError:
        pass
    return out
if __name__ == "__main__":
    for r in sorted(rows(sys.argv[1]).values(), key=lambda r: int(r["case"])):
        print(r["case"], r["output"], "start", r["start_mtre_mm"][:6], "mtre", r["mtre_mm"][:6], "failed", r["failed"], "flagged", r["likely_failed"])
