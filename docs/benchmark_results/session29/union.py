"""Cases of orient_hits.py outputs with a hypothesis within 20 mm among the first ranking's six ("base") or the second
ranking's two ("orient2"): what GlobalStage.orientation_hypotheses = 2 refines."""
import json, sys
for path in sys.argv[1:]:
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    rank = lambda row, name: next((i + 1 for i, e in enumerate(row[name][1:]) if e < 20), 99)
    base = sum(rank(row, "base") <= 6 for row in rows)
    union = sum(rank(row, "base") <= 6 or rank(row, "orient2") <= 2 for row in rows)
    print(f"{path}: {len(rows)} cases, base's six {base}, with orient2's two {union}")
