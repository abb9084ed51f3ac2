"""sopi register with every pass of run_passes dumped to OUT.passes.json (kind, assessment, theta, alternatives)."""
import json, sys
import sopi.registration.passes as passes
original = passes._merged
out = sys.argv[sys.argv.index("--out") + 1]
def merged(found):
    json.dump([{"kind": kind, "confidence": one.assessment.confidence, "likely_failed": one.assessment.likely_failed,
                "spine_in_view": one.assessment.spine_in_view, "theta": one.theta.tolist(),
                "alternatives": [t.tolist() for t in one.alternatives]} for kind, one in found], open(out + ".passes.json", "w"))
    return original(found)
passes._merged = merged
from sopi.cli import main
sys.exit(main(sys.argv[1:]))
