"""Old (first round of other hypotheses only) against new (up to five rounds) outcome of each case: alt_eval.py CT MASK CASE..."""
import json, sys, torch
from types import SimpleNamespace
from sopi.io import read_ct, read_mask
from sopi.geometry import load_pose, NominalView
from sopi.benchmark import target_points
from sopi.distances import mtre_mm
from sopi.registration.passes import _winner
from sopi.registration.global_search import same_hypothesis

ct = read_ct(sys.argv[1]); points = target_points(read_mask(sys.argv[2], ct))
for case in sys.argv[3:]:
    try:
        result = json.load(open(f"{case}/alt.json")); dump = json.load(open(f"{case}/alt.json.passes.json"))
    except FileNotFoundError:
        result = json.load(open(f"{case}/alt.json")) if __import__('os').path.exists(f"{case}/alt.json") else None
        if result is None:
            print(case.split('/')[-1], "not run"); continue
        dump = None
    gt = load_pose(f"{case}/gt.json"); init = load_pose(f"{case}/init.json")
    reference = NominalView(init.to(torch.float64), torch.tensor(result["pivot_world_mm"], dtype=torch.float64), "initial")
    def error(theta):
        return float(mtre_mm(reference.pose(torch.tensor(theta, dtype=torch.float64)), gt, points))
    final = float(mtre_mm(torch.tensor(result["matrix"], dtype=torch.float64), gt, points))
    if dump is None:  # one pass only: nothing flagged, or no run_passes merge
        print(case.split('/')[-1], f"single pass: {final:.2f} mm conf {result['confidence']:.2f}"); continue
    entries = [(p["kind"], SimpleNamespace(assessment=SimpleNamespace(confidence=p["confidence"], likely_failed=p["likely_failed"],
                spine_in_view=p["spine_in_view"]), theta=p["theta"], alternatives=p["alternatives"])) for p in dump]
    base = [e for e in entries if e[0] != "alternative"]; alts = [e for e in entries if e[0] == "alternative"]
    rounds, tried = [], []
    for depth in range(5):
        for _, one in base:
            if depth < len(one.alternatives) and not any(same_hypothesis(torch.tensor(one.alternatives[depth]), t) for t in tried):
                tried.append(torch.tensor(one.alternatives[depth])); rounds.append(depth)
    old = _winner(base + [a for a, r in zip(alts, rounds) if r == 0])
    alt_times = [rec["time_s"] for rec in result["stages"] if rec["stage"].startswith("another hypothesis")]
    per = len(alt_times) // max(1, len(alts))
    second = sum(sum(alt_times[i * per:(i + 1) * per]) for i, r in enumerate(rounds[:len(alts)]) if r == 1)
    extra = sum(sum(alt_times[i * per:(i + 1) * per]) for i, r in enumerate(rounds[:len(alts)]) if r > 0)
    new = _winner(entries)
    won = next((r for (kind, one), r in zip(alts, rounds) if one is new), None)
    print(case.split('/')[-1], f"old {error(old.theta):7.2f} mm conf {old.assessment.confidence:.2f}{' flagged' if old.assessment.likely_failed else ''}",
          f"| new {error(new.theta):7.2f} mm conf {new.assessment.confidence:.2f}{' flagged' if new.assessment.likely_failed else ''}",
          f"| result {final:.2f} (won by round {won}) | alternatives run {len(alts)} (rounds {sorted(set(rounds[:len(alts)]))}) | time {result['time_s']:.0f} s, later rounds {extra:.0f} s, round 1 {second:.0f} s")
