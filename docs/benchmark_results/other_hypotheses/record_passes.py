"""record_passes.py CT MASK PROTOCOL SEED OUT I [I ...]: cases I of `sopi benchmark --realistic --cases 10 --seed SEED`,
registered as the benchmark does (global+opt, seed SEED + I), every pass recorded; when the result is flagged, `opt`
from up to K (env, default 3) other hypotheses of each searched pass, distinct, recorded too. Appends one JSON line per
case to OUT. Run at commit 738f5e0 plus the plumbing of the eleventh session (`_Pass.alternatives`, `run(..., start)`),
with `ALTERNATIVES = 0` so that the product's own pass did not run (env SOPI: the package folder; with the landed
code the script turns that pass off itself)."""
import sys, time, os, json, torch
sys.path.insert(0, os.environ.get('SOPI', 'SOPIRegistration'))
from sopi.io import read_ct, read_mask
from sopi.geometry import CArmGeometry, nominal_view
from sopi.simulate import simulate_cases
from sopi.segment import mask_centroid_world
from sopi.benchmark import target_points, _row
from sopi.io_xray import XRay
from sopi.registration import register
import sopi.registration.api as api
try:  # the landed code: its own runner-up pass off, this script runs the runner-ups itself
    import sopi.registration.passes as passes
    passes.ALTERNATIVES = 0
except ImportError:  # the code this was first run at (738f5e0 plus the plumbing), with ALTERNATIVES = 0 in api.py
    pass
from sopi.registration.methods import without_search
K = int(os.environ.get('K', '3'))
ct_path, mask_path, protocol, seed, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
indices = [int(x) for x in sys.argv[6:]]
geometry = CArmGeometry.preset("perlove-plx118f")
ct = read_ct(ct_path); spine = read_mask(mask_path, ct)
nominal = nominal_view('ap', mask_centroid_world(spine), geometry.source_to_isocenter_mm)
points = target_points(spine)
thetas, images, draws = simulate_cases(ct, nominal, geometry, protocol, 10, seed, True, 'cpu', spine=spine)
orig = api.run_passes
for index in indices:
    log = []
    truth = thetas[index].to(torch.float64)
    def describe(kind, p, origin=None):
        r = _row('x', index, truth, p.problem.pose(p.theta), nominal.pose(truth), nominal, geometry, points, 0, p.similarity, 0)
        d = dict(kind=kind, mtre=r['mtre_mm'], failed=r['failed'], conf=p.assessment.confidence, flagged=p.assessment.likely_failed,
                 spine=p.assessment.spine_in_view, renders=sum(x.get('renders', 0) for x in p.records), similarity=p.similarity)
        if origin is not None:
            d['origin'] = [round(float(v), 1) for v in origin]
        log.append(d); print(index, d, flush=True)
    def patched(run, stages, second_look=None, judge=None):
        seen = []
        def logged(chosen, note, start=None):
            p = run(chosen, note, start); seen.append((note, p)); return p
        final = orig(logged, stages, second_look, judge)
        for note, p in list(seen):
            describe('pass:' + (note or 'first'), p)
        describe('final', final)
        if final.assessment.likely_failed:
            local = without_search(stages)
            from sopi.registration.global_search import same_hypothesis as _close
            tried = []
            for note, p in list(seen):
                if not p.alternatives: continue
                for theta in p.alternatives[:K]:
                    if any(_close(theta, o) for o in tried): continue
                    tried.append(theta)
                    q = run(local, 'alt: ', theta)
                    describe('alt-of:' + (note or 'first'), q, theta)
        return final
    api.run_passes = patched
    t = time.time()
    res = register(ct, XRay(images[index], geometry), initial_pose=nominal.camera_from_world, mask=spine, method='global+opt', device='cpu', seed=seed + index)
    with open(out, 'a') as f:
        f.write(json.dumps(dict(ct=os.path.basename(ct_path), protocol=protocol, seed=seed, case=index, time=time.time() - t, log=log)) + '\n')
