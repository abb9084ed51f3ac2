"""summarize.py FOLDER: the tables of docs/benchmarks.md ("A start kept tentatively") from the JSON lines that
record_tentative.py wrote into FOLDER: first_*.jsonl (the first pass with every start kept tentatively: the start's
judged confidence and where the tentative result ended) and ab_old_* / ab_new_* (whole registrations before and
after, the same cases)."""
import glob, json, os, sys

folder = sys.argv[1]


def lines(path):
    return [json.loads(line) for line in open(path)]


print("| row | cases | starts not trusted (judged < 0.2) | their highest judgement | of them at least 0.08 | ended trusted from the start: right (< 10 mm), wrong | of those at least 0.08 |")
print("|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(folder, "first_*.jsonl"))):
    rows = lines(path)
    firsts = [next(p for p in r["log"] if p["kind"].startswith("pass:")) for r in rows]
    doubted = [f for f in firsts if f["start_confidence"] is not None and f["start_confidence"] < 0.2]
    band = [f for f in doubted if f["start_confidence"] >= 0.08]
    trusted = [f for f in doubted if not f["flagged"]]
    right = sum(f["mtre"] < 10 for f in trusted)
    in_band = [f for f in band if not f["flagged"]]
    band_right = sum(f["mtre"] < 10 for f in in_band)
    name = os.path.basename(path)[len("first_"):-len(".jsonl")]
    top = max((f["start_confidence"] for f in doubted), default=float("nan"))
    print(f"| {name} | {len(rows)} | {len(doubted)} | {top:.3f} | {len(band)} | {right}, {len(trusted) - right} | {band_right}, {len(in_band) - band_right} |")

print()
print("| row, case | start judged | before: mTRE, confidence, passes, time | after: mTRE, confidence, passes, time |")
print("|---|---|---|---|")
for old_path in sorted(glob.glob(os.path.join(folder, "ab_old_*.jsonl"))):
    new_path = old_path.replace("ab_old_", "ab_new_")
    old = {r["case"]: r for r in lines(old_path)}
    new = {r["case"]: r for r in lines(new_path)} if os.path.exists(new_path) else {}
    for case in sorted(old):
        cells = []
        for one in (old[case], new.get(case)):
            if one is None:
                cells.append("-")
                continue
            final = one["log"][-1]
            passes = sum(p["kind"].startswith("pass:") for p in one["log"])
            cells.append(f"{final['mtre']:.2f} mm, {final['conf']:.2f}{' flagged' if final['flagged'] else ''}, {passes}, {one['time']:.1f} s")
        sc = old[case]["log"][-1]["start_confidence"]
        name = os.path.basename(old_path)[len("ab_old_"):-len(".jsonl")]
        print(f"| {name} {case} | {sc} | {cells[0]} | {cells[1]} |")
