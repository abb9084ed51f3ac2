"""record_tentative.py CT MASK PROTOCOL SEED OUT [I ...]: the cases of `sopi benchmark --realistic --cases 10 --seed
SEED` (all, or cases I), registered as the benchmark does (global+opt, seed SEED + I), every pass recorded: its label,
mTRE, confidence, flag, time and the start's judged confidence. Appends one JSON line per case to OUT.
Env TENTATIVE: `GlobalStage.tentative_start_above` for the run (a number; `none`: off, the code before; `default`:
the code's own, default 0: every start not trusted outright is kept tentatively). FIRST_ONLY=1: the first pass
alone (the start's judgement and the tentative result). JUDGEMENTS=1: every judgement of the start (after 8, then 24
generations) in the line too. SOPI: the package folder (default SOPIRegistration)."""
import sys, time, os, json
from dataclasses import replace
import torch
sys.path.insert(0, os.environ.get('SOPI', 'SOPIRegistration'))
from sopi.benchmark import benchmark_cases, _row
from sopi.io_xray import XRay
from sopi.registration import register
import sopi.registration.api as api
from sopi.registration.methods import METHODS, GlobalStage

THRESHOLD = os.environ.get('TENTATIVE', '0')  # 'default': the code's own setting
if THRESHOLD != 'default':
    METHODS['global+opt'] = tuple(replace(s, tentative_start_above=None if THRESHOLD == 'none' else float(THRESHOLD))
                                  if isinstance(s, GlobalStage) else s for s in METHODS['global+opt'])
ct_path, mask_path, protocol, seed, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
indices = [int(x) for x in sys.argv[6:]] or list(range(10))
ct, spine, geometry, nominal, points, thetas, images = benchmark_cases(ct_path, mask_path, protocol, 10, seed, True)
orig = api.run_passes
judgements = []  # JUDGEMENTS=1: every judgement of the start (confidence), in order (8, then 24 generations)
if os.environ.get('JUDGEMENTS'):
    import sopi.registration.global_search as global_search_module
    _assess = global_search_module.assess
    def _logged_assess(problem, theta, **kwargs):
        result = _assess(problem, theta, **kwargs)
        if 'coefficients' in kwargs:
            judgements.append(result.confidence)
        return result
    global_search_module.assess = _logged_assess
for index in indices:
    log = []
    judgements.clear()
    truth = thetas[index].to(torch.float64)

    def describe(kind, p, seconds):
        r = _row('x', index, truth, p.problem.pose(p.theta), nominal.pose(truth), nominal, geometry, points, 0, p.similarity, 0)
        start = [rec.get('start_confidence') for rec in p.records if 'start_confidence' in rec]
        d = dict(kind=kind, mtre=r['mtre_mm'], failed=r['failed'], conf=p.assessment.confidence, flagged=p.assessment.likely_failed,
                 renders=sum(x.get('renders', 0) for x in p.records), time=seconds,
                 start_confidence=start[0] if start else None, tentative=any(rec.get('tentative') for rec in p.records))
        log.append(d); print(index, d, flush=True)

    def patched(run, stages, second_look=None, judge=None):
        def logged(chosen, note, start=None):
            t0 = time.perf_counter(); p = run(chosen, note, start); describe('pass:' + (note or 'first'), p, time.perf_counter() - t0); return p
        if os.environ.get('FIRST_ONLY'):  # the first pass alone: the start's judgement and the tentative result
            final = logged(stages, "")
        else:
            final = orig(logged, stages, second_look, judge)
        describe('final', final, 0.0)
        return final
    api.run_passes = patched
    t = time.time()
    res = register(ct, XRay(images[index], geometry), initial_pose=nominal.camera_from_world, mask=spine, method='global+opt', device='cpu', seed=seed + index)
    with open(out, 'a') as f:
        f.write(json.dumps(dict(ct=os.path.basename(ct_path), protocol=protocol, seed=seed, case=index, time=time.time() - t, log=log, **({'judgements': list(judgements)} if os.environ.get('JUDGEMENTS') else {}))) + '\n')
