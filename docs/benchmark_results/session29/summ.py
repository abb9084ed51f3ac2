import json, sys
for path in sys.argv[1:]:
    rows = [json.loads(l) for l in open(path) if l.startswith("{")]
    names = [k for k in rows[0] if k not in ("case", "theta")]
    out = {}
    for n in names:
        ranks = []
        for r in rows:
            hyp = r[n][1:]
            rank = next((i + 1 for i, e in enumerate(hyp) if e < 20), None)
            ranks.append(rank)
        out[n] = (sum(1 for x in ranks if x is not None and x <= 6), ranks)
    print(path, {n: v[0] for n, v in out.items()}, " ".join(f"{n}:{v[1]}" for n, v in out.items()))
