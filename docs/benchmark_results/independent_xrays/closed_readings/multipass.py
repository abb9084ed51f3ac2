"""Cases whose registration ran more than one pass (a stage label with a note prefix): multipass.py DIR..."""
import sys, json
from pathlib import Path
for d in sys.argv[1:]:
    out = []
    for case in sorted(Path(d).glob("case_*"), key=lambda p: int(p.name.split("_")[1])):
        r = case / "result.json"
        if not r.exists():
            out.append(case.name + "(none)"); continue
        labels = [s.get("stage", "") for s in json.loads(r.read_text())["stages"]]
        if any(": " in l for l in labels):
            out.append(case.name.split("_")[1])
    print(d, " ".join(out))
